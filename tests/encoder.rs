//! The H.264 encoder as a viewer meets it: every picture decodes (openh264's decoder, as the
//! test viewers use) with the stamp the test pattern drew intact, Constrained Baseline with
//! parameter sets before every IDR, keyframes only where asked, rate changes applied live.

use std::time::{Duration, SystemTime};

use camportal::TestSrc;
use camportal::encoder::{Encoder, EncoderError, EncoderSettings};
use camportal::frame::{CaptureTime, RawFrame};
use camportal::rtp::h264::{NAL_IDR, NAL_SPS, nal_type, nal_types, nal_units};
use camportal::stamp::{self, Stamp};
use camportal_viewer::Decoder;

fn settings(
    width: u32,
    height: u32,
    bitrate_bps: u32,
    keyframe_interval_frames: u32,
) -> EncoderSettings {
    EncoderSettings {
        width,
        height,
        fps: 30,
        bitrate_bps,
        keyframe_interval_frames,
    }
}

/// Pictures as the test pattern would yield them at 30 fps, without waiting for real time.
fn pictures(width: u32, height: u32, n: u32) -> Vec<(RawFrame, Stamp)> {
    let src = TestSrc::new(width, height, 30);
    let (mono, wall) = (std::time::Instant::now(), SystemTime::now());
    (0..n)
        .map(|i| {
            let dt = Duration::from_secs(1) * i / 30;
            let capture = CaptureTime {
                wall: wall + dt,
                mono: mono + dt,
            };
            (src.render(i, capture), Stamp::new(i, capture.wall))
        })
        .collect()
}

/// SPS profile_idc, constraint flags and level_idc as the SDP's profile-level-id hex.
fn profile_level_id(annexb: &[u8]) -> Option<String> {
    let sps = nal_units(annexb).find(|nal| nal_type(nal) == NAL_SPS)?;
    let id = sps.get(1..4)?;
    Some(format!("{:02x}{:02x}{:02x}", id[0], id[1], id[2]))
}

fn round_trip(width: u32, height: u32, bitrate: u32, n: u32) {
    let mut enc = Encoder::new(&settings(width, height, bitrate, 60)).expect("encoder");
    let mut dec = Decoder::new().expect("decoder");
    let mut bytes = 0usize;
    for (i, (pic, stamp)) in pictures(width, height, n).into_iter().enumerate() {
        let au = enc
            .encode(&pic, false)
            .expect("encode")
            .expect("an access unit per picture");
        assert_eq!((au.width, au.height), (width, height));
        assert_eq!(au.keyframe, i % 60 == 0, "picture {i}");
        bytes += au.data.len();
        let out = dec
            .decode(&au.data)
            .expect("decode")
            .expect("a picture per access unit");
        assert_eq!((out.width, out.height), (width, height));
        assert_eq!(out.y.len(), (width * height) as usize);
        assert_eq!(out.stamp, Some(stamp), "{width}x{height} picture {i}");
    }
    let kbps = bytes as u64 * 8 * 30 / u64::from(n) / 1000;
    eprintln!("{width}x{height}@{bitrate}: {n} pictures, {kbps} kbit/s");
}

#[test]
fn stamp_survives_compression_320x240_300k() {
    round_trip(320, 240, 300_000, 90);
}

#[test]
fn stamp_survives_compression_1280x720_2m() {
    round_trip(1280, 720, 2_000_000, 45);
}

#[test]
fn stamp_survives_compression_1920x1080_2m() {
    round_trip(1920, 1080, 2_000_000, 30);
}

#[test]
fn stamp_survives_a_starved_encoder() {
    // Noise below the band leaves the rate control no choice but the coarsest quantiser.
    for (w, h, bitrate) in [
        (320, 240, 50_000),
        (640, 480, 100_000),
        (1920, 1080, 300_000),
    ] {
        let mut enc = Encoder::new(&settings(w, h, bitrate, 1000)).expect("encoder");
        let mut dec = Decoder::new().expect("decoder");
        let band = stamp::band_height(w, h) as usize * w as usize;
        let mut state = 12345u32;
        let mut bytes = 0;
        for (i, (mut pic, stamp)) in pictures(w, h, 40).into_iter().enumerate() {
            for v in &mut pic.data[band..] {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *v = (state >> 24) as u8;
            }
            let au = enc.encode(&pic, false).expect("encode").expect("au");
            bytes += au.data.len();
            let out = dec.decode(&au.data).expect("decode").expect("picture");
            assert_eq!(out.stamp, Some(stamp), "{w}x{h} at {bitrate}: picture {i}");
        }
        eprintln!(
            "{w}x{h} noise at {bitrate}: {} kbit/s",
            bytes * 8 * 30 / 40 / 1000
        );
    }
}

#[test]
fn constrained_baseline_with_sps_pps_before_every_idr() {
    for (w, h, want) in [
        (640, 480, "42c01e"),
        (1280, 720, "42c01f"),
        (1920, 1080, "42c028"),
    ] {
        let mut enc = Encoder::new(&settings(w, h, 2_000_000, 5)).expect("encoder");
        for (i, (pic, _)) in pictures(w, h, 11).into_iter().enumerate() {
            let au = enc.encode(&pic, false).expect("encode").expect("au");
            let types: Vec<u8> = nal_types(&au.data).collect();
            if au.keyframe {
                let idr = types.iter().position(|&t| t == NAL_IDR).expect("idr");
                assert!(
                    types[..idr].contains(&7) && types[..idr].contains(&8),
                    "{types:?}"
                );
                let id = profile_level_id(&au.data).expect("sps");
                eprintln!("{w}x{h}: profile_level_id {id}");
                assert_eq!(id, want, "{w}x{h}");
            } else {
                assert!(
                    !types.contains(&7),
                    "SPS only with IDRs: picture {i} {types:?}"
                );
            }
        }
    }
}

#[test]
fn keyframes_first_forced_periodic_and_no_scene_change() {
    let mut enc = Encoder::new(&settings(640, 480, 500_000, 30)).expect("encoder");
    let mut keyframes = Vec::new();
    // 100 pictures of the moving pattern; force one at 45.
    for (i, (pic, _)) in pictures(640, 480, 100).into_iter().enumerate() {
        let au = enc.encode(&pic, i == 45).expect("encode").expect("au");
        if au.keyframe {
            keyframes.push(i);
        }
    }
    eprintln!("keyframes at {keyframes:?}");
    assert_eq!(keyframes[0], 0, "first access unit is a keyframe");
    assert!(
        keyframes.contains(&45),
        "forced keyframe on that very picture"
    );
    assert!(keyframes.contains(&30), "periodic keyframe");
    // Nothing but the first, the periodic ones (the period may restart at a forced IDR)
    // and the forced one: no scene-change IDRs.
    for k in &keyframes {
        assert!(
            *k == 45 || *k % 30 == 0 || (*k > 45 && (*k - 45) % 30 == 0),
            "unexpected {k}"
        );
    }
}

#[test]
fn scene_cut_does_not_cause_an_idr() {
    let mut enc = Encoder::new(&settings(640, 480, 500_000, 1000)).expect("encoder");
    for (i, (mut pic, _)) in pictures(640, 480, 10).into_iter().enumerate() {
        if i >= 5 {
            // A hard cut: invert the picture.
            pic.data.iter_mut().for_each(|v| *v = 255 - *v);
        }
        let au = enc.encode(&pic, false).expect("encode").expect("au");
        assert_eq!(au.keyframe, i == 0, "picture {i}");
    }
}

#[test]
fn encoder_and_decoder_can_move_to_their_threads() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Encoder>();
    assert_send::<Decoder>();
    assert_send::<EncoderError>();
}

#[test]
fn wrong_size_is_an_error_not_a_panic() {
    let mut enc = Encoder::new(&settings(320, 240, 300_000, 30)).expect("encoder");
    let (pic, _) = pictures(640, 480, 1).remove(0);
    let err = enc.encode(&pic, false).expect_err("size mismatch");
    assert!(err.to_string().contains("640x480"), "{err}");
    let (mut pic, _) = pictures(320, 240, 1).remove(0);
    pic.data.truncate(1000);
    assert!(matches!(
        enc.encode(&pic, false),
        Err(EncoderError::FrameData { .. })
    ));
    assert!(Encoder::new(&settings(321, 240, 300_000, 30)).is_err());
    assert!(Encoder::new(&settings(320, 240, 0, 30)).is_err());
    assert!(Encoder::new(&settings(320, 240, 300_000, 0)).is_err());
    assert!(Encoder::new(&settings(4096, 2304, 300_000, 30)).is_err());
}

#[test]
fn bitrate_changes_live() {
    let (w, h) = (640, 480);
    let mut enc = Encoder::new(&settings(w, h, 800_000, 1000)).expect("encoder");
    enc.set_bitrate(1_000_000)
        .expect("before the first picture");
    let mut sizes = Vec::new();
    for (i, (pic, _)) in pictures(w, h, 180).iter().enumerate() {
        // The pattern needs ~200 kbit/s at 640x480: squeeze below that, then release.
        match i {
            60 => enc.set_bitrate(100_000).expect("lower"),
            120 => enc.set_bitrate(1_000_000).expect("raise"),
            _ => {}
        }
        let au = enc.encode(pic, false).expect("encode").expect("au");
        sizes.push(au.data.len());
    }
    let kbps = |r: std::ops::Range<usize>| sizes[r].iter().sum::<usize>() * 8 / 1000;
    let (before, low, after) = (kbps(30..60), kbps(90..120), kbps(150..180));
    eprintln!("kbit/s: {before} at 1M, {low} at 100k, {after} at 1M again");
    assert!(
        low * 3 < before * 2,
        "lowering had no effect: {before} -> {low}"
    );
    assert!(
        low * 3 < after * 2,
        "raising had no effect: {low} -> {after}"
    );
    assert!(enc.set_bitrate(0).is_err());
    assert_eq!(enc.settings().bitrate_bps, 1_000_000);
}

#[test]
fn keyframe_interval_changes_live() {
    let (w, h) = (320, 240);
    let mut enc = Encoder::new(&settings(w, h, 300_000, 10)).expect("encoder");
    let keyframes: Vec<usize> = pictures(w, h, 60)
        .iter()
        .enumerate()
        .filter_map(|(i, (pic, _))| {
            if i == 25 {
                enc.set_keyframe_interval(30).expect("live change");
            }
            let au = enc.encode(pic, false).expect("encode").expect("au");
            au.keyframe.then_some(i)
        })
        .collect();
    // Every 10 pictures, then (counting from the last IDR, at 20) every 30.
    assert_eq!(keyframes, [0, 10, 20, 50], "{keyframes:?}");
    assert!(enc.set_keyframe_interval(0).is_err());
    assert_eq!(enc.settings().keyframe_interval_frames, 30);
}
