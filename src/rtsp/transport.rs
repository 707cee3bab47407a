//! The `Transport` header of a SETUP (RFC 2326 §12.39): how a reader wants the RTP packets,
//! and the server's answer. Readers may offer several alternatives in order of preference; the
//! first one this server serves wins: RTP over the RTSP connection (interleaved, TCP) or RTP to
//! the reader's UDP ports (unicast). Multicast is not served.

use std::str::FromStr;

/// How a reader gets its packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Requested {
    /// `$`-framed on the RTSP connection: RTP on the first channel, RTCP on the second.
    Tcp { interleaved: (u8, u8) },
    /// UDP to the reader's address: RTP to the first port, RTCP to the second.
    Udp { client_ports: (u16, u16) },
}

/// The transports this server offers (`rtspTransports`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Allowed {
    pub tcp: bool,
    pub udp: bool,
}

/// Alternatives named in an error; a longer header is cut short there.
const MAX_NAMED: usize = 4;
/// Characters of one alternative quoted in an error.
const MAX_QUOTED: usize = 80;

/// The first alternative of a client's `Transport` header that is allowed and supported.
/// `next_channel` is the first free interleaved channel on the connection: a TCP alternative
/// without `interleaved=` gets it and the one after. The error names what was asked and what is
/// offered (the reason of a `461 Unsupported Transport`).
pub(crate) fn parse(header: &str, allowed: Allowed, next_channel: u8) -> Result<Requested, String> {
    let mut refused = Vec::new();
    for alternative in split_outside_quotes(header, ',') {
        let alternative = alternative.trim();
        if alternative.is_empty() {
            continue;
        }
        match choose(alternative, allowed, next_channel) {
            Ok(requested) => return Ok(requested),
            Err(reason) => refused.push(format!("\"{}\" ({reason})", printable(alternative))),
        }
    }
    let asked = match refused.len() {
        0 => "an empty Transport header".to_string(),
        n if n > MAX_NAMED => format!(
            "unsupported transports {} and {} more",
            refused[..MAX_NAMED].join(", "),
            n - MAX_NAMED
        ),
        1 => format!("unsupported transport {}", refused[0]),
        _ => format!("unsupported transports {}", refused.join(", ")),
    };
    Err(format!("{asked}; this server offers {}", offered(allowed)))
}

/// The reply's `Transport` header for what was chosen. `server_ports` are the UDP ports RTP and
/// RTCP leave from (ignored for TCP).
pub(crate) fn reply(requested: &Requested, server_ports: (u16, u16), ssrc: u32) -> String {
    match requested {
        Requested::Tcp {
            interleaved: (rtp, rtcp),
        } => format!("RTP/AVP/TCP;unicast;interleaved={rtp}-{rtcp};ssrc={ssrc:08X}"),
        Requested::Udp {
            client_ports: (rtp, rtcp),
        } => format!(
            "RTP/AVP;unicast;client_port={rtp}-{rtcp};server_port={}-{};ssrc={ssrc:08X}",
            server_ports.0, server_ports.1
        ),
    }
}

/// One alternative (`RTP/AVP/TCP;unicast;interleaved=0-1`), or why it is not served.
fn choose(alternative: &str, allowed: Allowed, next_channel: u8) -> Result<Requested, String> {
    let mut params = split_outside_quotes(alternative, ';').map(str::trim);
    let spec = params.next().unwrap_or_default();
    let tcp = match spec.to_ascii_uppercase().as_str() {
        "RTP/AVP" | "RTP/AVP/UDP" => false,
        "RTP/AVP/TCP" => true,
        _ => return Err(format!("{} is not supported", printable(spec))),
    };
    let mut interleaved = None;
    let mut client_ports = None;
    for param in params {
        let (key, value) = match param.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        match key.to_ascii_lowercase().as_str() {
            "multicast" => return Err("multicast is not supported".to_string()),
            "interleaved" => interleaved = Some(pair(key, value, |c: u8| c.checked_add(1))?),
            "client_port" => {
                let ports = pair(key, value, |p: u16| p.checked_add(1))?;
                if ports.0 == 0 || ports.1 == 0 {
                    return Err("client_port 0 is not a port".to_string());
                }
                client_ports = Some(ports);
            }
            "mode" => {
                let play = value.is_some_and(|modes| {
                    modes
                        .split(',')
                        .any(|mode| mode.trim().eq_ignore_ascii_case("play"))
                });
                if !play {
                    return Err("only mode=PLAY is served".to_string());
                }
            }
            // `destination=` is ignored: packets only ever go to the address the RTSP connection
            // comes from, or anyone could aim the server's stream at a third host.
            // `unicast` is the only delivery served; `ssrc`, `ttl` and others do not matter.
            _ => {}
        }
    }
    if tcp {
        if !allowed.tcp {
            return Err("TCP is not enabled in rtspTransports".to_string());
        }
        let channels = match interleaved {
            Some(channels) => channels,
            None => (
                next_channel,
                next_channel
                    .checked_add(1)
                    .ok_or("no interleaved channels left on this connection")?,
            ),
        };
        Ok(Requested::Tcp {
            interleaved: channels,
        })
    } else {
        if !allowed.udp {
            return Err("UDP is not enabled in rtspTransports".to_string());
        }
        let client_ports = client_ports.ok_or("client_port is missing")?;
        Ok(Requested::Udp { client_ports })
    }
}

/// `a-b`, or `a` alone meaning `a` and the next one.
fn pair<T: FromStr + Copy>(
    key: &str,
    value: Option<&str>,
    next: impl Fn(T) -> Option<T>,
) -> Result<(T, T), String> {
    let value = value.ok_or_else(|| format!("{key} has no value"))?;
    let bad = || format!("{key}={} is not a number or a pair", printable(value));
    let number = |text: &str| text.trim().parse::<T>().map_err(|_| bad());
    match value.split_once('-') {
        Some((first, second)) => Ok((number(first)?, number(second)?)),
        None => {
            let first = number(value)?;
            Ok((first, next(first).ok_or_else(bad)?))
        }
    }
}

/// `text` split at `separator`, except inside double quotes (`mode="PLAY,RECORD"`).
fn split_outside_quotes(text: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts.into_iter()
}

/// Client text fit for an error message (and a status line): printable ASCII, cut short.
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_QUOTED)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if text.chars().nth(MAX_QUOTED).is_some() {
        out.push_str("...");
    }
    out
}

fn offered(allowed: Allowed) -> &'static str {
    match (allowed.tcp, allowed.udp) {
        (true, true) => "RTP/AVP/TCP (interleaved) and RTP/AVP unicast UDP (client_port)",
        (true, false) => "only RTP/AVP/TCP (interleaved)",
        (false, true) => "only RTP/AVP unicast UDP (client_port)",
        (false, false) => "no transport (rtspTransports is empty)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Allowed = Allowed {
        tcp: true,
        udp: true,
    };
    const TCP_ONLY: Allowed = Allowed {
        tcp: true,
        udp: false,
    };
    const UDP_ONLY: Allowed = Allowed {
        tcp: false,
        udp: true,
    };

    #[test]
    fn ffmpeg() {
        assert_eq!(
            parse("RTP/AVP/TCP;unicast;interleaved=0-1", BOTH, 0),
            Ok(Requested::Tcp {
                interleaved: (0, 1)
            })
        );
        assert_eq!(
            parse("RTP/AVP/UDP;unicast;client_port=20000-20001", BOTH, 0),
            Ok(Requested::Udp {
                client_ports: (20000, 20001)
            })
        );
    }

    #[test]
    fn vlc() {
        assert_eq!(
            parse("RTP/AVP;unicast;client_port=51122-51123", BOTH, 0),
            Ok(Requested::Udp {
                client_ports: (51122, 51123)
            })
        );
    }

    #[test]
    fn gstreamer_alternatives_take_the_first_served() {
        let header = "RTP/AVP;multicast;mode=\"PLAY\", RTP/AVP;unicast;client_port=41374-41375;\
                      mode=\"PLAY\",RTP/AVP/TCP;unicast;interleaved=0-1;mode=\"PLAY\"";
        assert_eq!(
            parse(header, BOTH, 0),
            Ok(Requested::Udp {
                client_ports: (41374, 41375)
            })
        );
        assert_eq!(
            parse(header, TCP_ONLY, 0),
            Ok(Requested::Tcp {
                interleaved: (0, 1)
            })
        );
    }

    #[test]
    fn defaults_and_odd_forms() {
        // No `interleaved=`: the connection's next free pair.
        assert_eq!(
            parse("RTP/AVP/TCP;unicast", BOTH, 2),
            Ok(Requested::Tcp {
                interleaved: (2, 3)
            })
        );
        assert!(parse("RTP/AVP/TCP;unicast", BOTH, 255).is_err());
        // Single numbers mean a pair.
        assert_eq!(
            parse("rtp/avp/tcp;interleaved=4", BOTH, 0),
            Ok(Requested::Tcp {
                interleaved: (4, 5)
            })
        );
        assert_eq!(
            parse("RTP/AVP;unicast;client_port=5000", BOTH, 0),
            Ok(Requested::Udp {
                client_ports: (5000, 5001)
            })
        );
        // Another host is never the destination.
        assert_eq!(
            parse(
                "RTP/AVP;unicast;destination=203.0.113.9;client_port=5000-5001",
                BOTH,
                0
            ),
            Ok(Requested::Udp {
                client_ports: (5000, 5001)
            })
        );
    }

    #[test]
    fn refusals_say_what_was_asked_and_what_is_offered() {
        let err = parse("RTP/AVP;multicast", BOTH, 0).unwrap_err();
        assert!(err.contains("\"RTP/AVP;multicast\" (multicast"), "{err}");
        assert!(err.contains("offers RTP/AVP/TCP"), "{err}");

        let err = parse("RTP/AVP/TCP;unicast;interleaved=0-1", UDP_ONLY, 0).unwrap_err();
        assert!(err.contains("TCP is not enabled"), "{err}");
        assert!(err.contains("offers only RTP/AVP unicast UDP"), "{err}");

        for garbage in [
            "",
            "hello",
            "RTP/AVP;unicast",
            "RTP/AVP;client_port=x-y",
            "RTP/AVP;client_port=0-1",
            "RTP/AVP;client_port=65535",
            "RTP/AVP/TCP;interleaved",
            "RTP/AVP/TCP;interleaved=0-300",
            "RTP/AVP/TCP;interleaved=0-1;mode=record",
            "RTP/SAVP;unicast;client_port=5000-5001",
        ] {
            assert!(parse(garbage, BOTH, 0).is_err(), "{garbage}");
        }
        let err = parse("\u{1}\r\n", BOTH, 0).unwrap_err();
        assert!(!err.contains(['\r', '\n', '\u{1}']), "{err:?}");

        let many = ["RTP/AVP;multicast"; 10].join(",");
        let err = parse(&many, BOTH, 0).unwrap_err();
        assert!(err.contains("and 6 more"), "{err}");
    }

    #[test]
    fn replies() {
        let tcp = Requested::Tcp {
            interleaved: (0, 1),
        };
        assert_eq!(
            reply(&tcp, (8000, 8001), 0x1a2b_3c4d),
            "RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=1A2B3C4D"
        );
        let udp = Requested::Udp {
            client_ports: (5000, 5001),
        };
        assert_eq!(
            reply(&udp, (8000, 8001), 0xbeef),
            "RTP/AVP;unicast;client_port=5000-5001;server_port=8000-8001;ssrc=0000BEEF"
        );
    }
}
