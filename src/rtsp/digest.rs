//! HTTP Digest authentication as RTSP readers speak it (RFC 2617): ffmpeg, VLC (live555) and
//! GStreamer answer a `WWW-Authenticate: Digest` challenge with MD5 and no `qop`; `qop=auth` is
//! accepted too. The server needs the plain password to check a response (the reader hashes it
//! with the nonce), so Digest only works for users whose password is configured in plain.

use std::fmt::Write;

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// The `Authorization: Digest ...` fields that matter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DigestResponse {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
}

/// The `WWW-Authenticate` value of a `401`.
pub(crate) fn challenge(realm: &str, nonce: &str) -> String {
    format!(
        "Digest realm=\"{}\", nonce=\"{}\"",
        escape(realm),
        escape(nonce)
    )
}

/// The fields of an `Authorization: Digest ...` value; `None` for another scheme, a malformed
/// value, a missing field or an algorithm other than MD5.
pub(crate) fn parse(authorization: &str) -> Option<DigestResponse> {
    let (scheme, rest) = authorization
        .trim()
        .split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let (mut username, mut realm, mut nonce, mut uri, mut response) =
        (None, None, None, None, None);
    let (mut qop, mut nc, mut cnonce) = (None, None, None);
    for (key, value) in params(rest)? {
        match key.to_ascii_lowercase().as_str() {
            "username" => username = Some(value),
            "realm" => realm = Some(value),
            "nonce" => nonce = Some(value),
            "uri" => uri = Some(value),
            "response" => response = Some(value),
            "qop" => qop = Some(value),
            "nc" => nc = Some(value),
            "cnonce" => cnonce = Some(value),
            "algorithm" if !value.eq_ignore_ascii_case("md5") => return None,
            _ => {}
        }
    }
    Some(DigestResponse {
        username: username?,
        realm: realm?,
        nonce: nonce?,
        uri: uri?,
        response: response?,
        qop,
        nc,
        cnonce,
    })
}

/// Whether `response` was computed with `password` for a request of `method`. The caller checks
/// that its realm and nonce are the ones this server issued (and still honours) and that the
/// user is the one whose password this is.
pub(crate) fn verify(response: &DigestResponse, method: &str, password: &str) -> bool {
    let ha1 = md5_hex(&[
        response.username.as_str(),
        response.realm.as_str(),
        password,
    ]);
    let ha2 = md5_hex(&[method, response.uri.as_str()]);
    let expected = match (&response.qop, &response.nc, &response.cnonce) {
        (None, _, _) => md5_hex(&[ha1.as_str(), response.nonce.as_str(), ha2.as_str()]),
        (Some(qop), Some(nc), Some(cnonce)) if qop.eq_ignore_ascii_case("auth") => md5_hex(&[
            ha1.as_str(),
            response.nonce.as_str(),
            nc.as_str(),
            cnonce.as_str(),
            qop.as_str(),
            ha2.as_str(),
        ]),
        // `auth-int`, or `qop` without its counter and client nonce.
        _ => return false,
    };
    let given = response.response.to_ascii_lowercase();
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// MD5 of the parts joined with `:`, as lowercase hex.
fn md5_hex(parts: &[&str]) -> String {
    let mut hasher = Md5::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b":");
        }
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(32), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// `key=value, key="quoted value", ...` with the quotes removed and `\` escapes resolved; `None`
/// if malformed (an unterminated quote, a key that is not a token).
fn params(text: &str) -> Option<Vec<(&str, String)>> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return Some(out);
        }
        let (key, after) = rest.split_once('=')?;
        let key = key.trim();
        if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == ',' || c == '"') {
            return None;
        }
        let after = after.trim_start();
        let (value, remaining) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut value = String::new();
                let mut end = None;
                let mut chars = quoted.char_indices();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => value.push(chars.next()?.1),
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        _ => value.push(c),
                    }
                }
                (value, &quoted[end?..])
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            }
        };
        out.push((key, value));
        rest = remaining;
    }
}

/// `text` fit for a quoted string.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    // python3: a = md5("admin:camportal:secret"), b = md5("DESCRIBE:rtsp://192.168.1.10:8554/cam"),
    // md5(a + ":0a4f113b:" + b) and md5(a + ":0a4f113b:00000001:4ee5fd0b:auth:" + b).
    const NO_QOP: &str = "c0669b43952103d7307b0d7e57c9f047";
    const QOP_AUTH: &str = "85e8c4ff1903c6851c974630b6f8472b";

    fn ffmpeg_header(response: &str) -> String {
        format!(
            "Digest username=\"admin\", realm=\"camportal\", nonce=\"0a4f113b\", \
             uri=\"rtsp://192.168.1.10:8554/cam\", response=\"{response}\", algorithm=\"MD5\""
        )
    }

    #[test]
    fn challenge_header() {
        assert_eq!(
            challenge("camportal", "0a4f113b"),
            "Digest realm=\"camportal\", nonce=\"0a4f113b\""
        );
        assert_eq!(
            challenge("a\"b", "n"),
            "Digest realm=\"a\\\"b\", nonce=\"n\""
        );
    }

    #[test]
    fn parses_what_readers_send() {
        let parsed = parse(&ffmpeg_header(NO_QOP)).expect("parse");
        assert_eq!(
            parsed,
            DigestResponse {
                username: "admin".into(),
                realm: "camportal".into(),
                nonce: "0a4f113b".into(),
                uri: "rtsp://192.168.1.10:8554/cam".into(),
                response: NO_QOP.into(),
                qop: None,
                nc: None,
                cnonce: None,
            }
        );
        // Bare values, odd spacing, a quoted comma, an escape.
        let parsed = parse(
            "digest  username = \"a\\\\b\",realm=camportal ,nonce=\"x\", uri=\"rtsp://h/p?a=1,2\",\
             response=ABC,qop=auth,nc=00000001,cnonce=\"4ee5fd0b\"",
        )
        .expect("parse");
        assert_eq!(parsed.username, "a\\b");
        assert_eq!(parsed.realm, "camportal");
        assert_eq!(parsed.uri, "rtsp://h/p?a=1,2");
        assert_eq!(parsed.response, "ABC");
        assert_eq!(parsed.qop.as_deref(), Some("auth"));
        assert_eq!(parsed.nc.as_deref(), Some("00000001"));
        assert_eq!(parsed.cnonce.as_deref(), Some("4ee5fd0b"));
    }

    #[test]
    fn refuses_what_is_not_digest() {
        for bad in [
            "",
            "Digest",
            "Basic YWRtaW46c2VjcmV0",
            // No response.
            "Digest username=\"admin\", realm=\"camportal\", nonce=\"n\", uri=\"/\"",
            // A quote that swallows the next field.
            "Digest username=\"admin, realm=\"camportal\"",
            "Digest username",
            "Digest a b=c",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let sha = ffmpeg_header(NO_QOP).replace("\"MD5\"", "SHA-256");
        assert_eq!(parse(&sha), None);
    }

    #[test]
    fn verifies_without_qop() {
        let parsed = parse(&ffmpeg_header(NO_QOP)).expect("parse");
        assert!(verify(&parsed, "DESCRIBE", "secret"));
        assert!(!verify(&parsed, "DESCRIBE", "secreT"));
        assert!(!verify(&parsed, "SETUP", "secret"));
        let upper = parse(&ffmpeg_header(&NO_QOP.to_uppercase())).expect("parse");
        assert!(verify(&upper, "DESCRIBE", "secret"));
        let short = parse(&ffmpeg_header(&NO_QOP[..31])).expect("parse");
        assert!(!verify(&short, "DESCRIBE", "secret"));
    }

    #[test]
    fn verifies_qop_auth() {
        let header = ffmpeg_header(QOP_AUTH) + ", qop=auth, nc=00000001, cnonce=\"4ee5fd0b\"";
        let parsed = parse(&header).expect("parse");
        assert!(verify(&parsed, "DESCRIBE", "secret"));
        assert!(!verify(&parsed, "DESCRIBE", "other"));
        let without_cnonce = DigestResponse {
            cnonce: None,
            ..parsed.clone()
        };
        assert!(!verify(&without_cnonce, "DESCRIBE", "secret"));
        let auth_int = DigestResponse {
            qop: Some("auth-int".into()),
            ..parsed
        };
        assert!(!verify(&auth_int, "DESCRIBE", "secret"));
    }

    #[test]
    fn rfc_2617_example() {
        let parsed = parse(
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", qop=auth, \
             nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .expect("parse");
        assert!(verify(&parsed, "GET", "Circle Of Life"));
    }
}
