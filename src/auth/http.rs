//! Access control for HTTP: every request is decided from its address, its URL's first segment
//! and its credentials before any handler reads it (a WHEP offer is not parsed for a client
//! that may not watch). Credentials come as HTTP Basic or, for kiosk URLs that must not prompt,
//! as `?user=...&pass=...` in the query string.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{info, warn};

use super::{Access, Credentials, Decision, Target};
use crate::config::Action;

/// Who made an allowed request, for handlers that decide more (the index lists only the paths
/// its client may watch).
#[derive(Clone)]
pub(crate) struct Caller {
    pub ip: IpAddr,
    pub credentials: Option<(String, String)>,
}

impl Caller {
    pub(crate) fn credentials(&self) -> Option<Credentials<'_>> {
        self.credentials
            .as_ref()
            .map(|(user, pass)| Credentials { user, pass })
    }
}

/// What a request asks for, from its URL path alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    /// `/_static/...`: the player's script and style, nothing about any camera.
    Assets,
    /// `/` and `/_paths`: the list of paths.
    Index,
    /// `/api/...`.
    Api,
    /// `/<name>`, `/<name>/` and below; `whep` for `/<name>/whep...`.
    ///
    /// The name is not percent-decoded: a path name cannot contain `%`, so an encoded name is
    /// only ever allowed by a rule for all paths, never by a rule for another path.
    Path { name: &'a str, whep: bool },
}

fn route(path: &str) -> Route<'_> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (first, tail) = match rest.split_once('/') {
        Some((first, tail)) => (first, Some(tail)),
        None => (rest, None),
    };
    match first {
        "" | "_paths" => Route::Index,
        "_static" => Route::Assets,
        "api" => Route::Api,
        name => Route::Path {
            name,
            whep: tail.is_some_and(|t| t == "whep" || t.starts_with("whep/")),
        },
    }
}

/// The credentials a request carries: `Authorization: Basic`, else `user`/`pass` in the query.
fn credentials(headers: &HeaderMap, query: Option<&str>) -> Option<(String, String)> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return super::basic_credentials(value.to_str().ok()?);
    }
    let (mut user, mut pass) = (None, None);
    for (key, value) in form_urlencoded::parse(query?.as_bytes()) {
        match &*key {
            "user" => user = Some(value.into_owned()),
            "pass" => pass = Some(value.into_owned()),
            _ => {}
        }
    }
    Some((user?, pass.unwrap_or_default()))
}

/// The request's `Origin` if it is another origin than the one it was sent to.
fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?;
    let Ok(origin) = origin.to_str() else {
        return Some("(unreadable)".to_string());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, host)| host);
    match (origin_host, host) {
        (Some(origin_host), Some(host)) if origin_host.eq_ignore_ascii_case(host) => None,
        _ => Some(origin.to_string()),
    }
}

fn plain(status: StatusCode, reason: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        reason + "\n",
    )
        .into_response()
}

/// The middleware: decides, then passes the request on or answers `401`/`403` itself.
pub(crate) async fn guard(
    State(access): State<Arc<Access>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let ip = peer.ip();
    let uri_path = request.uri().path().to_string();
    let route = route(&uri_path);
    if let Some(origin) = foreign_origin(request.headers()) {
        let whep = matches!(route, Route::Path { whep: true, .. });
        if !(whep && access.origin_allowed(&origin)) {
            info!(client = %ip, %origin, path = %uri_path, "cross-origin request refused");
            return plain(
                StatusCode::FORBIDDEN,
                format!(
                    "requests from pages of another origin ({origin}) are refused here \
                     (webrtcAllowOrigins in camportal.yml lists who may use WHEP)"
                ),
            );
        }
    }
    // Static files, and CORS preflights (browsers send them without credentials): the
    // address alone decides.
    if route == Route::Assets || request.method() == Method::OPTIONS {
        if access.network_admits(ip) {
            return next.run(request).await;
        }
        info!(client = %ip, path = %uri_path, "request refused: address not allowed");
        return plain(
            StatusCode::FORBIDDEN,
            format!("clients at {ip} may not use this server (see authInternalUsers)"),
        );
    }
    let target = match route {
        Route::Index => Target::ReadSomePath,
        Route::Api => Target::On(Action::Api, None),
        Route::Path { name, .. } => Target::On(Action::Read, Some(name)),
        Route::Assets => unreachable!("answered above"),
    };
    admit(&access, ip, &uri_path, target, request, next).await
}

/// The middleware of the metrics port: everything there needs the `metrics` permission, and
/// no page of another origin reads it.
pub(crate) async fn metrics_guard(
    State(access): State<Arc<Access>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let ip = peer.ip();
    let uri_path = request.uri().path().to_string();
    if let Some(origin) = foreign_origin(request.headers()) {
        info!(client = %ip, %origin, "cross-origin metrics request refused");
        return plain(
            StatusCode::FORBIDDEN,
            format!("requests from pages of another origin ({origin}) are refused here"),
        );
    }
    let target = Target::On(Action::Metrics, None);
    admit(&access, ip, &uri_path, target, request, next).await
}

/// Lets the request through if `target` is allowed to its caller, else answers `401` (with a
/// prompt, after a delay if wrong credentials were given) or `403`.
async fn admit(
    access: &Arc<Access>,
    ip: IpAddr,
    uri_path: &str,
    target: Target<'_>,
    mut request: Request,
    next: Next,
) -> Response {
    let given = credentials(request.headers(), request.uri().query());
    let as_credentials = given
        .as_ref()
        .map(|(user, pass)| Credentials { user, pass });
    match access.decide(ip, target, as_credentials).await {
        Decision::Allow { .. } => {
            request.extensions_mut().insert(Caller {
                ip,
                credentials: given,
            });
            next.run(request).await
        }
        Decision::Unauthorized => {
            if let Some((user, _)) = &given {
                warn!(client = %ip, %user, path = %uri_path, "authentication failed");
                super::delay_failure().await;
            }
            let mut response = plain(
                StatusCode::UNAUTHORIZED,
                "sign in: this needs a user name and password".to_string(),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"camportal\", charset=\"UTF-8\""),
            );
            response
        }
        Decision::Forbidden(reason) => {
            info!(client = %ip, path = %uri_path, %reason, "request refused");
            plain(StatusCode::FORBIDDEN, reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_from_the_first_segment() {
        assert_eq!(route("/"), Route::Index);
        assert_eq!(route("/_paths"), Route::Index);
        assert_eq!(route("/_static/player.js"), Route::Assets);
        assert_eq!(route("/api/viewers"), Route::Api);
        assert_eq!(route("/api"), Route::Api);
        assert_eq!(
            route("/cam"),
            Route::Path {
                name: "cam",
                whep: false
            }
        );
        assert_eq!(
            route("/cam/"),
            Route::Path {
                name: "cam",
                whep: false
            }
        );
        assert_eq!(
            route("/cam/whep"),
            Route::Path {
                name: "cam",
                whep: true
            }
        );
        assert_eq!(
            route("/cam/whep/abc"),
            Route::Path {
                name: "cam",
                whep: true
            }
        );
        assert_eq!(
            route("/cam/whepx"),
            Route::Path {
                name: "cam",
                whep: false
            }
        );
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn credentials_from_basic_or_the_query() {
        // "kiosk:pa:ss"
        let basic = headers(&[(header::AUTHORIZATION, "Basic a2lvc2s6cGE6c3M=")]);
        assert_eq!(
            credentials(&basic, Some("user=x&pass=y")),
            Some(("kiosk".into(), "pa:ss".into()))
        );
        assert_eq!(
            credentials(&HeaderMap::new(), Some("stats=1&user=kiosk&pass=p%26q")),
            Some(("kiosk".into(), "p&q".into()))
        );
        assert_eq!(credentials(&HeaderMap::new(), Some("stats=1")), None);
        assert_eq!(credentials(&HeaderMap::new(), None), None);
        let bearer = headers(&[(header::AUTHORIZATION, "Bearer abc")]);
        assert_eq!(credentials(&bearer, None), None);
        let broken = headers(&[(header::AUTHORIZATION, "Basic %%%")]);
        assert_eq!(credentials(&broken, None), None);
    }

    #[test]
    fn origins() {
        let same = headers(&[
            (header::ORIGIN, "http://192.168.1.5:8889"),
            (header::HOST, "192.168.1.5:8889"),
        ]);
        assert_eq!(foreign_origin(&same), None);
        assert_eq!(foreign_origin(&headers(&[(header::HOST, "x")])), None);
        let other = headers(&[
            (header::ORIGIN, "http://evil.example"),
            (header::HOST, "192.168.1.5:8889"),
        ]);
        assert_eq!(
            foreign_origin(&other).as_deref(),
            Some("http://evil.example")
        );
        let null = headers(&[(header::ORIGIN, "null"), (header::HOST, "h")]);
        assert_eq!(foreign_origin(&null).as_deref(), Some("null"));
        let origins =
            |list: &[&str]| Access::new(vec![], list.iter().map(|o| o.to_string()).collect());
        assert!(origins(&["*"]).origin_allowed("http://a"));
        assert!(origins(&["http://a/"]).origin_allowed("http://a"));
        assert!(!origins(&["http://a"]).origin_allowed("http://b"));
        assert!(!origins(&[]).origin_allowed("http://a"));
    }
}
