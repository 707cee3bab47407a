//! `camportal devices`: the cameras of this machine, what each is (card name, driver, bus, USB
//! id, the stable links to it) and offers (formats, sizes, frame rates), each with a ready-to-drop
//! `config.d` file.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

use crate::config::PathName;
use crate::source::v4l2::device::{self, NodeInfo};
use crate::source::v4l2::modes::{self, FormatOffer, Mode, PixelFormat};

/// The report, and whether any camera was found.
pub fn report() -> (String, bool) {
    let cameras = device::cameras();
    if cameras.is_empty() {
        let nodes: Vec<String> = device::video_nodes()
            .iter()
            .map(|n| n.display().to_string())
            .collect();
        let text = format!(
            "No video capture device found (video nodes: {}). Is the camera plugged in, and may \
             this user open /dev/video* (group `video`)?\n",
            if nodes.is_empty() {
                "none".to_owned()
            } else {
                nodes.join(", ")
            }
        );
        return (text, false);
    }
    let mut names = BTreeSet::new();
    let mut out = String::new();
    for (dev, info) in &cameras {
        match device::offers(dev, None) {
            Ok(offers) => out.push_str(&describe_camera(info, &offers, &mut names)),
            Err(err) => {
                let _ = writeln!(out, "{}: cannot list formats: {err}\n", info.describe());
            }
        }
    }
    (out, true)
}

/// One camera's section.
pub fn describe_camera(
    info: &NodeInfo,
    offers: &[FormatOffer],
    names: &mut BTreeSet<String>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: \"{}\"", info.node.display(), info.card);
    let _ = writeln!(out, "  driver {}, bus {}", info.driver, info.bus);
    if let Some(usb) = info.usb {
        let serial = info
            .serial
            .as_deref()
            .map(|s| format!(", serial {s}"))
            .unwrap_or_default();
        let _ = writeln!(out, "  usb {usb}{serial}");
    }
    if info.stable_ids.is_empty() {
        let _ = writeln!(out, "  stable ids: none (udev makes them under /dev/v4l)");
    } else {
        let _ = writeln!(out, "  stable ids:");
        for id in &info.stable_ids {
            let _ = writeln!(out, "    {}", id.display());
        }
    }
    let _ = writeln!(out, "  formats:");
    let mut unusable = Vec::new();
    for offer in offers {
        match offer.pixel_format() {
            Some(pixel) => {
                let _ = writeln!(
                    out,
                    "    {} ({}, format: {}): {}",
                    pixel,
                    offer.description,
                    pixel.config_name(),
                    modes::describe_sizes(offer)
                );
            }
            None => unusable.push(offer.fourcc_text()),
        }
    }
    if !unusable.is_empty() {
        let _ = writeln!(
            out,
            "    also {} formats camportal does not take: {}",
            unusable.len(),
            unusable.join(" ")
        );
    }
    match modes::suggest(offers) {
        Some(mode) => {
            let name = unique_name(&info.card, names);
            let _ = writeln!(out, "  config.d/{name}.yml:");
            for line in suggested_file(info, offers, &mode).lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
        None => {
            let _ = writeln!(
                out,
                "  no mode camportal can use (it takes H264, MJPEG, NV12 and YUYV)"
            );
        }
    }
    out.push('\n');
    out
}

/// A path file for `mode` of this camera, naming it by its first stable link if it has one.
pub fn suggested_file(info: &NodeInfo, offers: &[FormatOffer], mode: &Mode) -> String {
    let device: &Path = info.stable_ids.first().unwrap_or(&info.node);
    let mut out = String::new();
    let _ = writeln!(out, "source:");
    let _ = writeln!(out, "  type: v4l2");
    let _ = writeln!(out, "  device: {}", device.display());
    let _ = writeln!(out, "  format: {}", mode.pixel.config_name());
    if mode.pixel != PixelFormat::H264
        && offers
            .iter()
            .any(|o| o.pixel_format() == Some(PixelFormat::H264))
    {
        let _ = writeln!(
            out,
            "  # The camera also encodes H.264 itself: `format: h264` passes it through if its \
             profile is one browsers decode."
        );
    }
    let _ = writeln!(out, "encoding:");
    let _ = writeln!(out, "  width: {}", mode.width);
    let _ = writeln!(out, "  height: {}", mode.height);
    let _ = writeln!(out, "  fps: {}", mode.interval.fps().round() as u32);
    out
}

/// A path name from the card name: lower case, `-` for anything else, unique among `taken`.
fn unique_name(card: &str, taken: &mut BTreeSet<String>) -> String {
    let mut base: String = card
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    base = base
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    base.truncate(48);
    if PathName::new(&base).is_err() {
        base = format!("camera-{base}").trim_end_matches('-').to_owned();
    }
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    taken.insert(name.clone());
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CaptureFormat, SourceConfig, parse_path_file};
    use crate::source::v4l2::modes::{Interval, Rates, SizeOffer};

    fn vivid_info() -> NodeInfo {
        NodeInfo {
            node: "/dev/video0".into(),
            driver: "vivid".into(),
            card: "vivid".into(),
            bus: "platform:vivid-000".into(),
            capture: true,
            usb: None,
            serial: None,
            stable_ids: Vec::new(),
        }
    }

    fn offer(fourcc: &[u8; 4], description: &str) -> FormatOffer {
        FormatOffer {
            fourcc: *fourcc,
            description: description.into(),
            sizes: vec![
                SizeOffer {
                    width: 640,
                    height: 480,
                    rates: Rates::Discrete(vec![
                        Interval { num: 1, den: 25 },
                        Interval { num: 1, den: 5 },
                    ]),
                },
                SizeOffer {
                    width: 1280,
                    height: 720,
                    rates: Rates::Discrete(vec![Interval { num: 2, den: 25 }]),
                },
            ],
            range: None,
        }
    }

    #[test]
    fn a_camera_section_lists_formats_and_a_valid_path_file() {
        let offers = vec![
            offer(b"YUYV", "YUYV 4:2:2"),
            offer(b"UYVY", "UYVY 4:2:2"),
            offer(b"NV12", "Y/UV 4:2:0"),
        ];
        let mut names = BTreeSet::new();
        let text = describe_camera(&vivid_info(), &offers, &mut names);
        assert!(
            text.starts_with("/dev/video0: \"vivid\"\n  driver vivid, bus platform:vivid-000\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "    YUYV (YUYV 4:2:2, format: yuyv): 640x480 (25, 5 fps), 1280x720 (12.5 fps)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("    NV12 (Y/UV 4:2:0, format: nv12):"),
            "{text}"
        );
        assert!(
            text.contains("also 1 formats camportal does not take: UYVY"),
            "{text}"
        );
        assert!(text.contains("  config.d/vivid.yml:\n    source:\n      type: v4l2\n      device: /dev/video0\n      format: nv12\n"), "{text}");

        let mode = modes::suggest(&offers).unwrap();
        let file = suggested_file(&vivid_info(), &offers, &mode);
        let parsed = parse_path_file(Path::new("config.d/vivid.yml"), &file).unwrap();
        let SourceConfig::V4l2(v4l2) = parsed.source else {
            panic!("not v4l2")
        };
        assert_eq!(v4l2.format, CaptureFormat::Nv12);
        assert_eq!(
            (
                parsed.encoding.width,
                parsed.encoding.height,
                parsed.encoding.fps
            ),
            (640, 480, 25)
        );
    }

    #[test]
    fn stable_ids_are_preferred_and_names_are_unique() {
        let mut info = vivid_info();
        info.stable_ids = vec!["/dev/v4l/by-id/usb-Cam_123-video-index0".into()];
        info.usb = Some("046d:0825".parse().unwrap());
        let offers = vec![offer(b"MJPG", "Motion-JPEG"), offer(b"H264", "H.264")];
        let mode = modes::suggest(&offers).unwrap();
        let file = suggested_file(&info, &offers, &mode);
        assert!(
            file.contains("device: /dev/v4l/by-id/usb-Cam_123-video-index0\n"),
            "{file}"
        );
        assert!(
            file.contains("format: mjpeg\n  # The camera also encodes H.264"),
            "{file}"
        );
        assert!(parse_path_file(Path::new("x.yml"), &file).is_ok());

        let mut taken = BTreeSet::new();
        assert_eq!(
            unique_name("HD Pro Webcam C920", &mut taken),
            "hd-pro-webcam-c920"
        );
        assert_eq!(
            unique_name("HD Pro Webcam C920", &mut taken),
            "hd-pro-webcam-c920-2"
        );
        assert_eq!(unique_name("Api", &mut taken), "camera-api");
        assert_eq!(unique_name("°°°", &mut taken), "camera");
    }
}
