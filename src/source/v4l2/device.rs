//! Finding cameras: the video nodes under `/dev`, what each says about itself (driver, card,
//! bus; USB ids and serial from sysfs), the stable links udev made for it, and what it offers;
//! and which node a path's device selector names.

use std::io;
use std::mem;
use std::path::{Path, PathBuf};

use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::modes::{FormatOffer, Interval, Rates, SizeOffer, SizeRange};
use crate::config::{DeviceMatch, DeviceSelector, UsbId};

/// `V4L2_CAP_VIDEO_CAPTURE`: single-planar video capture, what webcams (uvcvideo) offer.
const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
/// `V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME`: a button that makes an H.264 camera's next picture a
/// keyframe (drivers of encoding cameras and codecs offer it; uvcvideo maps it for some).
const CID_FORCE_KEY_FRAME: u32 = 0x0099_09e5;
/// Where udev puts stable links to video nodes.
pub(crate) const STABLE_LINK_DIRS: [&str; 2] = ["/dev/v4l/by-id", "/dev/v4l/by-path"];

/// Asks the camera for a keyframe now. EINVAL (or ENOTTY) when it has no such control.
pub(crate) fn force_keyframe(dev: &Device) -> io::Result<()> {
    dev.set_control(v4l::Control {
        id: CID_FORCE_KEY_FRAME,
        value: v4l::control::Value::None,
    })
}

/// What one video node says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `/dev/videoN`.
    pub node: PathBuf,
    pub driver: String,
    pub card: String,
    pub bus: String,
    /// Video capture (a camera), as opposed to metadata, output or other nodes.
    pub capture: bool,
    pub usb: Option<UsbId>,
    pub serial: Option<String>,
    /// `/dev/v4l/by-id/…` and `/dev/v4l/by-path/…` links to this node.
    pub stable_ids: Vec<PathBuf>,
}

impl NodeInfo {
    /// A short name for logs and the status API: `/dev/video0 "HD Webcam C270" (046d:0825)`.
    pub fn describe(&self) -> String {
        let mut out = format!("{} \"{}\"", self.node.display(), self.card);
        if let Some(usb) = self.usb {
            out.push_str(&format!(" ({usb})"));
        }
        out
    }

    pub fn matches(&self, wanted: &DeviceMatch) -> bool {
        wanted
            .card
            .as_ref()
            .is_none_or(|card| self.card.trim() == card.trim())
            && wanted.usb.is_none_or(|usb| self.usb == Some(usb))
            && wanted
                .serial
                .as_ref()
                .is_none_or(|serial| self.serial.as_deref().map(str::trim) == Some(serial.trim()))
    }
}

/// `/dev/video*`, in number order.
pub(crate) fn video_nodes() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let number = name.to_str()?.strip_prefix("video")?.parse().ok()?;
            Some((number, entry.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, path)| path).collect()
}

/// Opens `node` and asks it what it is.
pub(crate) fn probe(node: &Path) -> io::Result<(Device, NodeInfo)> {
    let device = Device::with_path(node)?;
    let info = node_info(&device, node)?;
    Ok((device, info))
}

/// `VIDIOC_QUERYCAP` plus what sysfs and `/dev/v4l` say about the node. Strings are read
/// leniently: a card name cut inside a UTF-8 character must not be fatal.
pub(crate) fn node_info(device: &Device, node: &Path) -> io::Result<NodeInfo> {
    // SAFETY: QUERYCAP fills a plain C struct that we own and zeroed.
    let caps = unsafe {
        let mut caps: v4l::v4l_sys::v4l2_capability = mem::zeroed();
        v4l::v4l2::ioctl(
            device.handle().fd(),
            v4l::v4l2::vidioc::VIDIOC_QUERYCAP,
            &mut caps as *mut _ as *mut std::os::raw::c_void,
        )?;
        caps
    };
    let text = |bytes: &[u8]| {
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).trim().to_owned()
    };
    // Without V4L2_CAP_DEVICE_CAPS, `capabilities` describes the node itself.
    let node_caps = if caps.capabilities & 0x8000_0000 != 0 {
        caps.device_caps
    } else {
        caps.capabilities
    };
    let canonical = std::fs::canonicalize(node).unwrap_or_else(|_| node.to_path_buf());
    let (usb, serial) = usb_identity(&canonical);
    Ok(NodeInfo {
        node: canonical.clone(),
        driver: text(&caps.driver),
        card: text(&caps.card),
        bus: text(&caps.bus_info),
        capture: node_caps & CAP_VIDEO_CAPTURE != 0,
        usb,
        serial,
        stable_ids: stable_links_to(&canonical),
    })
}

/// USB vendor:product and serial of the device a node belongs to, from sysfs: the node's
/// `device` is the USB interface; the USB device (with `idVendor`) is one of its parents.
fn usb_identity(node: &Path) -> (Option<UsbId>, Option<String>) {
    let Some(name) = node.file_name() else {
        return (None, None);
    };
    let device = Path::new("/sys/class/video4linux")
        .join(name)
        .join("device");
    let Ok(mut dir) = std::fs::canonicalize(device) else {
        return (None, None);
    };
    for _ in 0..4 {
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file))
                .ok()
                .map(|s| s.trim().to_owned())
        };
        if let (Some(vendor), Some(product)) = (read("idVendor"), read("idProduct")) {
            let usb = format!("{vendor}:{product}").parse().ok();
            return (usb, read("serial").filter(|s| !s.is_empty()));
        }
        if !dir.pop() {
            break;
        }
    }
    (None, None)
}

/// The links in [`STABLE_LINK_DIRS`] that point at `node`.
fn stable_links_to(node: &Path) -> Vec<PathBuf> {
    let mut links = Vec::new();
    for dir in STABLE_LINK_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut here: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|link| std::fs::canonicalize(link).is_ok_and(|target| target == node))
            .collect();
        here.sort();
        links.extend(here);
    }
    links
}

/// Every capture node that can be opened and asked, in node order.
pub(crate) fn cameras() -> Vec<(Device, NodeInfo)> {
    video_nodes()
        .iter()
        .filter_map(|node| match probe(node) {
            Ok((device, info)) if info.capture => Some((device, info)),
            Ok(_) => None,
            Err(err) => {
                tracing::debug!(node = %node.display(), %err, "cannot probe video node");
                None
            }
        })
        .collect()
}

/// The node a selector names now. A path is taken as it is (opening it tells whether it is
/// there); a match must name exactly one camera. Errors do not repeat the selector: the caller
/// names it.
pub(crate) fn find(selector: &DeviceSelector) -> Result<PathBuf, String> {
    let wanted = match selector {
        DeviceSelector::Path(path) => return Ok(path.clone()),
        DeviceSelector::Match(wanted) => wanted,
    };
    let all = cameras();
    let found: Vec<&NodeInfo> = all
        .iter()
        .map(|(_, info)| info)
        .filter(|info| info.matches(wanted))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.node.clone()),
        [] => {
            let present: Vec<String> = all.iter().map(|(_, info)| info.describe()).collect();
            Err(format!(
                "no camera matches; {}",
                if present.is_empty() {
                    "no camera is connected".to_owned()
                } else {
                    format!("connected: {}", present.join(", "))
                }
            ))
        }
        many => {
            let nodes: Vec<String> = many.iter().map(|info| info.describe()).collect();
            Err(format!(
                "{} cameras match: {}; add `serial`, or use a /dev/v4l/by-path link as `device`",
                many.len(),
                nodes.join(", ")
            ))
        }
    }
}

pub(crate) fn describe_match(wanted: &DeviceMatch) -> String {
    let mut parts = Vec::new();
    if let Some(card) = &wanted.card {
        parts.push(format!("card \"{card}\""));
    }
    if let Some(usb) = wanted.usb {
        parts.push(format!("usb {usb}"));
    }
    if let Some(serial) = &wanted.serial {
        parts.push(format!("serial \"{serial}\""));
    }
    parts.join(", ")
}

/// Everything the camera offers for capture. Sizes given as a range are listed as the range,
/// plus `also_size` if it falls in it (the size a path asks for), so its rates are known.
pub(crate) fn offers(
    device: &Device,
    also_size: Option<(u32, u32)>,
) -> io::Result<Vec<FormatOffer>> {
    let mut out = Vec::new();
    for format in device.enum_formats()? {
        let fourcc = format.fourcc;
        let mut sizes = Vec::new();
        let mut range = None;
        // A driver that cannot list sizes still lists its formats.
        for size in device.enum_framesizes(fourcc).unwrap_or_default() {
            match size.size {
                v4l::framesize::FrameSizeEnum::Discrete(d) => {
                    sizes.push(SizeOffer {
                        width: d.width,
                        height: d.height,
                        rates: rates(device, fourcc, d.width, d.height),
                    });
                }
                v4l::framesize::FrameSizeEnum::Stepwise(s) => {
                    let r = SizeRange {
                        min_width: s.min_width,
                        max_width: s.max_width,
                        step_width: s.step_width,
                        min_height: s.min_height,
                        max_height: s.max_height,
                        step_height: s.step_height,
                    };
                    if let Some((w, h)) = also_size.filter(|(w, h)| r.contains(*w, *h)) {
                        sizes.push(SizeOffer {
                            width: w,
                            height: h,
                            rates: rates(device, fourcc, w, h),
                        });
                    }
                    range = Some(r);
                }
            }
        }
        out.push(FormatOffer {
            fourcc: fourcc.repr,
            description: format.description.trim().to_owned(),
            sizes,
            range,
        });
    }
    Ok(out)
}

fn rates(device: &Device, fourcc: FourCC, width: u32, height: u32) -> Rates {
    let Ok(intervals) = device.enum_frameintervals(fourcc, width, height) else {
        // The driver does not say: any rate may be asked for, and S_PARM will tell.
        return Rates::Range {
            min: Interval { num: 1, den: 120 },
            max: Interval { num: 1, den: 1 },
        };
    };
    let mut discrete = Vec::new();
    for interval in intervals {
        match interval.interval {
            v4l::frameinterval::FrameIntervalEnum::Discrete(f) => discrete.push(Interval {
                num: f.numerator,
                den: f.denominator,
            }),
            v4l::frameinterval::FrameIntervalEnum::Stepwise(s) => {
                return Rates::Range {
                    min: Interval {
                        num: s.min.numerator,
                        den: s.min.denominator,
                    },
                    max: Interval {
                        num: s.max.numerator,
                        den: s.max.denominator,
                    },
                };
            }
        }
    }
    Rates::Discrete(discrete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(card: &str, usb: Option<&str>, serial: Option<&str>) -> NodeInfo {
        NodeInfo {
            node: "/dev/video0".into(),
            driver: "uvcvideo".into(),
            card: card.into(),
            bus: "usb-0000:00:14.0-1".into(),
            capture: true,
            usb: usb.map(|u| u.parse().unwrap()),
            serial: serial.map(Into::into),
            stable_ids: Vec::new(),
        }
    }

    #[test]
    fn matching_needs_every_given_property() {
        let cam = info("HD Webcam C270", Some("046d:0825"), Some("ABC"));
        let by = |card: Option<&str>, usb: Option<&str>, serial: Option<&str>| DeviceMatch {
            card: card.map(Into::into),
            usb: usb.map(|u| u.parse().unwrap()),
            serial: serial.map(Into::into),
        };
        assert!(cam.matches(&by(Some("HD Webcam C270"), None, None)));
        assert!(cam.matches(&by(None, Some("046d:0825"), None)));
        assert!(cam.matches(&by(Some("HD Webcam C270"), Some("046d:0825"), Some("ABC"))));
        assert!(!cam.matches(&by(Some("HD Webcam"), None, None)));
        assert!(!cam.matches(&by(None, Some("046d:0826"), None)));
        assert!(!cam.matches(&by(None, Some("046d:0825"), Some("XYZ"))));
        // A camera without a serial never matches one.
        assert!(!info("vivid", None, None).matches(&by(None, None, Some("ABC"))));
        assert_eq!(cam.describe(), "/dev/video0 \"HD Webcam C270\" (046d:0825)");
        assert_eq!(
            describe_match(&by(Some("X"), Some("046d:0825"), Some("S"))),
            "card \"X\", usb 046d:0825, serial \"S\""
        );
    }

    #[test]
    fn a_path_selector_is_taken_as_given() {
        let path = DeviceSelector::Path("/dev/v4l/by-id/usb-cam-video-index0".into());
        assert_eq!(
            find(&path).unwrap(),
            PathBuf::from("/dev/v4l/by-id/usb-cam-video-index0")
        );
    }
}
