//! A byte stream of pictures without framing — a program's standard output, an MJPEG or H.264
//! file — cut by each format's own syntax (H.264 Annex B into access units, concatenated JPEGs
//! at their end markers, raw I420 by size) and turned into what a path takes: H.264 passed
//! through, JPEG decoded (and kept for JPEG readers), I420 as it is.

use bytes::Bytes;

use crate::config::StreamFormat;
use crate::frame::{CaptureTime, RawFrame};
use crate::rtp::h264::{NAL_IDR, NAL_PPS, NAL_SPS, nal_type};
use crate::source::Captured;
use crate::source::v4l2::convert::MjpegDecoder;
use crate::source::v4l2::passthrough::Passthrough;

/// JPEGs in a row that may fail to decode before the stream is an error.
const MAX_BAD_PICTURES: u32 = 10;

/// A stream of pictures of one format and size, cut and converted.
pub(crate) struct PictureStream {
    format: StreamFormat,
    splitter: Splitter,
    width: u32,
    height: u32,
    decoder: Option<MjpegDecoder>,
    passthrough: Passthrough,
    /// JPEGs in a row that did not decode.
    bad_pictures: u32,
}

impl PictureStream {
    /// MJPEG and I420 must be of `width` x `height`; H.264 is passed through as it is.
    pub(crate) fn new(format: StreamFormat, width: u32, height: u32) -> Result<Self, String> {
        let decoder = match format {
            StreamFormat::Mjpeg => Some(MjpegDecoder::new()?),
            _ => None,
        };
        Ok(PictureStream {
            format,
            splitter: Splitter::new(format, RawFrame::i420_len(width, height)),
            width,
            height,
            decoder,
            passthrough: Passthrough::default(),
            bad_pictures: 0,
        })
    }

    pub(crate) fn format(&self) -> StreamFormat {
        self.format
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.splitter.push(data);
    }

    /// The next picture, stamped with `capture()` (called once it is cut), or None until more
    /// bytes come. A damaged JPEG is skipped; many in a row are an error.
    pub(crate) fn next(
        &mut self,
        mut capture: impl FnMut() -> CaptureTime,
    ) -> Result<Option<Captured>, String> {
        while let Some(picture) = self.splitter.next_picture()? {
            if let Some(captured) = self.convert(picture, capture())? {
                return Ok(Some(captured));
            }
        }
        Ok(None)
    }

    fn convert(
        &mut self,
        picture: Vec<u8>,
        capture: CaptureTime,
    ) -> Result<Option<Captured>, String> {
        let (width, height) = (self.width, self.height);
        let raw = |data| RawFrame {
            width,
            height,
            data,
            capture,
        };
        Ok(match self.format {
            StreamFormat::H264 => self
                .passthrough
                .access_unit(&picture, width, height, capture)
                .map(Captured::H264),
            StreamFormat::Mjpeg => {
                let mut i420 = vec![0; RawFrame::i420_len(width, height)];
                let decoded = match self.decoder.as_mut() {
                    Some(decoder) => decoder.decode(&picture, width, height, &mut i420),
                    None => Err("no JPEG decoder".to_owned()),
                };
                if let Err(err) = decoded {
                    // One damaged picture is skipped; a stream of them is an error (a wrong
                    // size, not JPEG at all).
                    self.bad_pictures += 1;
                    if self.bad_pictures >= MAX_BAD_PICTURES {
                        return Err(format!(
                            "{err} (MJPEG must be of the path's encoding.width x \
                             encoding.height)"
                        ));
                    }
                    tracing::debug!(%err, "damaged JPEG skipped");
                    return Ok(None);
                }
                self.bad_pictures = 0;
                Some(Captured::Jpeg(raw(i420), Bytes::from(picture)))
            }
            StreamFormat::I420 => Some(Captured::Raw(raw(picture))),
        })
    }
}

/// A picture that has not ended after this many bytes is not one: the program writes something
/// else (or garbage), and the source fails rather than buffer without limit.
pub(crate) const MAX_PICTURE: usize = 16 << 20;

/// Zero bytes an H.264 stream may start with before its first start code's `01`; a raw
/// picture that starts black has many more.
const MAX_LEADING_ZEROS: usize = 64;

/// What the first bytes say the stream is: an H.264 start code (after any zero bytes), a JPEG's
/// start of image, or else raw pictures. None until there are enough bytes to tell; an error for
/// what is recognisably something else (MPEG-TS).
pub(crate) fn detect(first: &[u8]) -> Result<Option<StreamFormat>, String> {
    if first.len() < 4 {
        return Ok(None);
    }
    let zeros = first.iter().take_while(|&&b| b == 0).count();
    if zeros == first.len() && zeros < MAX_LEADING_ZEROS {
        return Ok(None);
    }
    if first[0] == 0x47 && first.len() >= 189 && first[188] == 0x47 {
        return Err("the program writes MPEG-TS; give it `-f h264` (or mjpeg, rawvideo)".into());
    }
    Ok(Some(if zeros >= 2 && first.get(zeros) == Some(&1) {
        StreamFormat::H264
    } else if first.starts_with(&[0xFF, 0xD8, 0xFF]) {
        StreamFormat::Mjpeg
    } else {
        StreamFormat::I420
    }))
}

/// Where the JPEG scanner stands in the picture at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JpegScan {
    /// At a marker (0xFF) at this offset.
    Marker(usize),
    /// In entropy-coded data from this offset: the next marker other than a stuffed 0xFF00 or
    /// a restart marker ends it.
    Entropy(usize),
}

/// Cuts a byte stream of one format into pictures.
struct Splitter {
    format: StreamFormat,
    /// Bytes of an I420 picture.
    picture_len: usize,
    buf: Vec<u8>,
    /// H.264: the offset up to which NAL starts have been looked at, and whether the access unit
    /// at the front has a slice yet.
    scanned: usize,
    has_slice: bool,
    /// A start code has been seen (what came before it was dropped).
    synced: bool,
    jpeg: JpegScan,
}

impl Splitter {
    fn new(format: StreamFormat, picture_len: usize) -> Splitter {
        Splitter {
            format,
            picture_len,
            buf: Vec::new(),
            scanned: 0,
            has_slice: false,
            synced: false,
            jpeg: JpegScan::Marker(0),
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole picture, None until more bytes come, or why the stream is not of its
    /// format.
    fn next_picture(&mut self) -> Result<Option<Vec<u8>>, String> {
        let picture = match self.format {
            StreamFormat::I420 => self.next_i420(),
            StreamFormat::H264 => self.next_access_unit(),
            StreamFormat::Mjpeg => self.next_jpeg()?,
        };
        if picture.is_none() && self.buf.len() > MAX_PICTURE.max(self.picture_len) {
            return Err(format!(
                "no whole {} picture in {} MiB of output: is it really {}?",
                self.format,
                self.buf.len() >> 20,
                self.format
            ));
        }
        Ok(picture)
    }

    fn take(&mut self, end: usize) -> Vec<u8> {
        let rest = self.buf.split_off(end);
        std::mem::replace(&mut self.buf, rest)
    }

    fn next_i420(&mut self) -> Option<Vec<u8>> {
        (self.picture_len > 0 && self.buf.len() >= self.picture_len)
            .then(|| self.take(self.picture_len))
    }

    /// An access unit ends where the next one's first NAL unit begins (H.264 7.4.1.2.3): an
    /// access unit delimiter, SEI or parameter set after a slice, or a slice whose
    /// `first_mb_in_slice` is 0. So a unit is cut when the next one starts: one picture interval
    /// late, which is the price of a pipe without framing.
    fn next_access_unit(&mut self) -> Option<Vec<u8>> {
        loop {
            let Some(code) = find_start_code(&self.buf, self.scanned) else {
                // Keep the last bytes: a start code may be split across reads.
                let keep_from = self.buf.len().saturating_sub(3);
                if self.synced {
                    self.scanned = keep_from;
                } else {
                    self.buf.drain(..keep_from);
                }
                return None;
            };
            if !self.synced {
                // Bytes before the first start code belong to no NAL unit.
                let lead = if code > 0 && self.buf[code - 1] == 0 {
                    code - 1
                } else {
                    code
                };
                self.buf.drain(..lead);
                self.synced = true;
                self.scanned = 0;
                continue;
            }
            // The NAL header and, for a slice, the first byte of its header.
            let Some(&second) = self.buf.get(code + 4) else {
                self.scanned = code;
                return None;
            };
            let header = self.buf[code + 3];
            let kind = nal_type(&[header]);
            let slice = kind == 1 || kind == NAL_IDR;
            // ue(v) 0 is the single bit 1: the slice starts the picture.
            let starts_unit = (slice && second & 0x80 != 0)
                || matches!(kind, 6 | NAL_SPS | NAL_PPS | 9 | 14..=18);
            if self.has_slice && starts_unit {
                // The zero bytes before a start code (a 4-byte code's first, trailing_zero_8bits)
                // are no part of the last NAL unit; its data never ends in 0x00.
                let mut end = code;
                while end > 0 && self.buf[end - 1] == 0 {
                    end -= 1;
                }
                self.has_slice = false;
                self.scanned = 0;
                let unit = self.take(end);
                // The next unit starts with its start code: at most 3 zero bytes and the 01.
                let zeros = self.buf.iter().take_while(|&&b| b == 0).count();
                self.buf.drain(..zeros.saturating_sub(3));
                return Some(unit);
            }
            self.has_slice |= slice;
            self.scanned = code + 3;
        }
    }

    /// A JPEG ends at its EOI marker. Walked segment by segment, so a 0xFFD9 inside a segment
    /// (a thumbnail in EXIF) does not end it early.
    fn next_jpeg(&mut self) -> Result<Option<Vec<u8>>, String> {
        if matches!(self.jpeg, JpegScan::Marker(0)) {
            // Skip to a start of image (garbage, or padding between pictures, is dropped).
            match self.buf.windows(2).position(|w| w == [0xFF, 0xD8]) {
                Some(at) => {
                    self.buf.drain(..at);
                    self.jpeg = JpegScan::Marker(2);
                }
                None => {
                    let keep = usize::from(self.buf.last() == Some(&0xFF));
                    let cut = self.buf.len() - keep;
                    self.buf.drain(..cut);
                    return Ok(None);
                }
            }
        }
        loop {
            match self.jpeg {
                JpegScan::Entropy(from) => {
                    let mut at = from;
                    loop {
                        let Some(ff) = self.buf[at.min(self.buf.len())..]
                            .iter()
                            .position(|&b| b == 0xFF)
                            .map(|i| i + at)
                        else {
                            // Not before `at`: the scan header may not be all in yet.
                            self.jpeg = JpegScan::Entropy(at.max(self.buf.len()));
                            return Ok(None);
                        };
                        let Some(&next) = self.buf.get(ff + 1) else {
                            self.jpeg = JpegScan::Entropy(ff);
                            return Ok(None);
                        };
                        if next == 0 || (0xD0..=0xD7).contains(&next) {
                            at = ff + 2;
                        } else {
                            self.jpeg = JpegScan::Marker(ff);
                            break;
                        }
                    }
                }
                JpegScan::Marker(at) => {
                    let Some(&first) = self.buf.get(at) else {
                        return Ok(None);
                    };
                    if first != 0xFF {
                        return Err(format!(
                            "not a JPEG: byte 0x{first:02X} where a marker belongs"
                        ));
                    }
                    let Some(&marker) = self.buf.get(at + 1) else {
                        return Ok(None);
                    };
                    match marker {
                        // Fill bytes before a marker.
                        0xFF => self.jpeg = JpegScan::Marker(at + 1),
                        0xD9 => {
                            self.jpeg = JpegScan::Marker(0);
                            return Ok(Some(self.take(at + 2)));
                        }
                        0x01 | 0xD0..=0xD7 => self.jpeg = JpegScan::Marker(at + 2),
                        // A new picture where the last had not ended (it was cut short): drop
                        // the broken one and start over here.
                        0xD8 => {
                            self.buf.drain(..at);
                            self.jpeg = JpegScan::Marker(2);
                        }
                        _ => {
                            let Some(len) = self.buf.get(at + 2..at + 4) else {
                                return Ok(None);
                            };
                            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                            if len < 2 {
                                return Err(format!("not a JPEG: segment length {len}"));
                            }
                            let end = at + 2 + len;
                            self.jpeg = if marker == 0xDA {
                                JpegScan::Entropy(end)
                            } else {
                                JpegScan::Marker(end)
                            };
                        }
                    }
                }
            }
        }
    }
}

/// The offset of the next `00 00 01` at or after `from`.
fn find_start_code(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::h264::sample::{IDR, P, PPS, SPS, annexb};

    /// Feeds `stream` in pieces of `chunk` bytes and collects the pictures.
    fn split(
        format: StreamFormat,
        picture_len: usize,
        stream: &[u8],
        chunk: usize,
    ) -> Vec<Vec<u8>> {
        let mut splitter = Splitter::new(format, picture_len);
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            splitter.push(piece);
            while let Some(p) = splitter.next_picture().expect("valid stream") {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn the_first_bytes_tell_the_format() {
        let h264 = Ok(Some(StreamFormat::H264));
        assert_eq!(detect(&[0, 0, 0, 1, 0x67]), h264);
        assert_eq!(detect(&[0, 0, 1, 0x09, 0x10]), h264);
        assert_eq!(detect(&[0, 0, 0, 0, 0, 1, 0x67]), h264);
        assert_eq!(
            detect(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Ok(Some(StreamFormat::Mjpeg))
        );
        assert_eq!(detect(&[16, 16, 16, 16]), Ok(Some(StreamFormat::I420)));
        assert_eq!(detect(&[0, 0]), Ok(None));
        // Zeros alone: more are needed, unless there are many (a black raw picture).
        assert_eq!(detect(&[0; 10]), Ok(None));
        assert_eq!(detect(&[0; 100]), Ok(Some(StreamFormat::I420)));
        let mut ts = vec![0u8; 400];
        (ts[0], ts[188]) = (0x47, 0x47);
        assert!(detect(&ts).unwrap_err().contains("MPEG-TS"));
    }

    #[test]
    fn trailing_zeros_stay_out_of_the_access_unit() {
        let first = annexb(&[&SPS, &PPS, &IDR]);
        let mut stream = first.clone();
        stream.extend_from_slice(&[0, 0, 0]);
        stream.extend(annexb(&[&P]));
        stream.extend(annexb(&[&P]));
        let got = split(StreamFormat::H264, 0, &stream, 3);
        // The IDR sample itself ends in a zero byte, which goes too.
        assert_eq!(got[0], first[..first.len() - 1]);
    }

    #[test]
    fn a_cut_short_jpeg_is_dropped_for_the_next() {
        let whole = jpeg(&[1, 2, 3]);
        // Cut in its entropy-coded data (a JPEG cut within a segment cannot be told apart).
        let cut = whole[..15].to_vec();
        let stream = [cut, whole.clone()].concat();
        assert_eq!(split(StreamFormat::Mjpeg, 0, &stream, 4), [whole]);
    }

    #[test]
    fn h264_is_cut_into_access_units_whatever_the_reads() {
        // IDR and P from the sample are slices with first_mb_in_slice 0.
        let units = [annexb(&[&SPS, &PPS, &IDR]), annexb(&[&P]), annexb(&[&P])];
        let stream: Vec<u8> = units.concat();
        // The sample IDR ends in a zero byte, taken for padding before the next start code.
        let first = &units[0][..units[0].len() - 1];
        let expected = [first, &units[1][..]];
        for chunk in [1, 2, 3, 7, 1000] {
            let got = split(StreamFormat::H264, 0, &stream, chunk);
            // The last unit is cut only when another begins.
            assert_eq!(got, expected, "chunk {chunk}");
        }
        // Garbage before the first start code is dropped.
        let mut noisy = b"xyz".to_vec();
        noisy.extend_from_slice(&stream);
        assert_eq!(split(StreamFormat::H264, 0, &noisy, 5), expected);
    }

    #[test]
    fn a_second_slice_of_the_same_picture_stays_in_its_unit() {
        // A slice whose first_mb_in_slice is not 0 (first bit 0) continues the picture.
        let mut second_slice = P.to_vec();
        second_slice[1] &= 0x7F;
        let first = annexb(&[&SPS, &PPS, &IDR, &second_slice]);
        let stream = [first.clone(), annexb(&[&P]), annexb(&[&P])].concat();
        let got = split(StreamFormat::H264, 0, &stream, 4);
        assert_eq!(got[0], first);
        assert_eq!(got.len(), 2);
    }

    fn jpeg(payload: &[u8]) -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8];
        // An APP1 segment holding a fake EOI, which must not end the picture.
        j.extend_from_slice(&[0xFF, 0xE1, 0, 6, 0xFF, 0xD9, 1, 2]);
        j.extend_from_slice(&[0xFF, 0xDA, 0, 2]);
        j.extend_from_slice(payload);
        j.extend_from_slice(&[0xFF, 0xD9]);
        j
    }

    #[test]
    fn jpegs_are_cut_at_their_end_marker() {
        // Stuffed 0xFF00 and a restart marker inside the entropy-coded data.
        let a = jpeg(&[1, 0xFF, 0x00, 2, 0xFF, 0xD3, 3]);
        let b = jpeg(&[9, 9, 9]);
        let stream = [b"junk".to_vec(), a.clone(), b.clone(), vec![0xFF]].concat();
        for chunk in [1, 2, 3, 5, 1000] {
            assert_eq!(
                split(StreamFormat::Mjpeg, 0, &stream, chunk),
                [a.clone(), b.clone()],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn broken_jpegs_and_endless_pictures_are_errors() {
        let mut s = Splitter::new(StreamFormat::Mjpeg, 0);
        s.push(&[0xFF, 0xD8, 0x12, 0x34]);
        assert!(s.next_picture().unwrap_err().contains("not a JPEG"));

        let mut s = Splitter::new(StreamFormat::H264, 0);
        s.push(&annexb(&[&IDR]));
        s.push(&vec![7u8; MAX_PICTURE + 1]);
        let err = s.next_picture().unwrap_err();
        assert!(err.contains("is it really h264"), "{err}");
    }

    #[test]
    fn raw_pictures_are_cut_by_size() {
        let stream: Vec<u8> = (0..25u8).collect();
        let got = split(StreamFormat::I420, 10, &stream, 3);
        assert_eq!(got, [(0..10).collect::<Vec<u8>>(), (10..20).collect()]);
    }
}
