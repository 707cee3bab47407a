//! Camera pictures to I420, the encoder's input: YUYV through the `yuv` crate, MJPEG through
//! libjpeg-turbo's decompress-to-YUV (webcams send 4:2:2, brought to 4:2:0 here), NV12 by
//! splitting its interleaved chroma (the `yuv` crate has no NV12→I420; it is one pass of plain
//! copies the compiler vectorises).
//!
//! Ranges: H.264 from camportal signals no colour range, so every decoder takes it as limited
//! ("TV", luma 16–235, chroma 16–240). YUYV and NV12 cameras deliver limited range already and
//! are passed on as they are. JPEG is full range (0–255): decoded MJPEG is brought to limited
//! range here, in the same pass that lays out its planes, or every viewer would see shadows and
//! highlights clipped and contrast and saturation raised (~16 %, ~14 %).

use turbojpeg::{Decompressor, Subsamp, YuvImage};
use yuv::{BufferStoreMut, YuvPackedImage, YuvPlanarImageMut};

use crate::frame::RawFrame;

/// Full-range luma (JPEG) → limited range: 0..=255 onto 16..=235, rounded.
const LUMA_TO_LIMITED: [u8; 256] = range_table(16, 219);
/// Full-range chroma → limited range: 0..=255 around 128 onto 16..=240, rounded.
const CHROMA_TO_LIMITED: [u8; 256] = range_table(0, 0);

/// `offset + v * scale / 255` for luma; for chroma (`scale` 0), `128 + (v - 128) * 224 / 255`.
const fn range_table(offset: u32, scale: u32) -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut v = 0;
    while v < 256 {
        table[v] = if scale == 0 {
            // 128 + (v - 128) * 224 / 255 = (v * 224 + 128 * 31) / 255, rounded.
            ((v as u32 * 224 + 128 * 31 + 127) / 255) as u8
        } else {
            (offset + (v as u32 * scale + 127) / 255) as u8
        };
        v += 1;
    }
    table
}

fn map_in_place(plane: &mut [u8], table: &[u8; 256]) {
    for v in plane {
        *v = table[usize::from(*v)];
    }
}

/// Byte offsets of the U and V planes in an I420 picture of `width` x `height` (even).
fn i420_split(width: usize, height: usize) -> (usize, usize) {
    let y = width * height;
    (y, y + (width / 2) * (height / 2))
}

/// Packed YUYV rows of `stride` bytes → `dst` (I420, tightly packed).
pub(crate) fn yuyv_to_i420(
    src: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    dst: &mut [u8],
) -> Result<(), String> {
    let (w, h) = (width as usize, height as usize);
    check_len("YUYV", src.len(), stride * (h - 1) + 2 * w)?;
    if dst.len() != RawFrame::i420_len(width, height) {
        return Err("I420 buffer of the wrong size".into());
    }
    let (u_at, v_at) = i420_split(w, h);
    let (y_plane, chroma) = dst.split_at_mut(u_at);
    let (u_plane, v_plane) = chroma.split_at_mut(v_at - u_at);
    let mut planar = YuvPlanarImageMut {
        y_plane: BufferStoreMut::Borrowed(y_plane),
        y_stride: width,
        u_plane: BufferStoreMut::Borrowed(u_plane),
        u_stride: width / 2,
        v_plane: BufferStoreMut::Borrowed(v_plane),
        v_stride: width / 2,
        width,
        height,
    };
    let packed = YuvPackedImage {
        yuy: src,
        yuy_stride: u32::try_from(stride).map_err(|_| "YUYV stride too large".to_owned())?,
        width,
        height,
    };
    yuv::yuyv422_to_yuv420(&mut planar, &packed).map_err(|e| format!("YUYV to I420: {e}"))
}

/// NV12 (a Y plane of `stride`-byte rows, then `height / 2` rows of interleaved U and V, also
/// `stride` bytes each) → `dst` (I420).
pub(crate) fn nv12_to_i420(
    src: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    dst: &mut [u8],
) -> Result<(), String> {
    let (w, h) = (width as usize, height as usize);
    check_len("NV12", src.len(), stride * h + stride * (h / 2 - 1) + w)?;
    if dst.len() != RawFrame::i420_len(width, height) {
        return Err("I420 buffer of the wrong size".into());
    }
    let (u_at, v_at) = i420_split(w, h);
    let (y_plane, chroma) = dst.split_at_mut(u_at);
    let (u_plane, v_plane) = chroma.split_at_mut(v_at - u_at);
    for (row, out) in src.chunks(stride).zip(y_plane.chunks_exact_mut(w)) {
        out.copy_from_slice(&row[..w]);
    }
    let uv_rows = src[stride * h..].chunks(stride);
    let cw = w / 2;
    for ((row, u), v) in uv_rows
        .zip(u_plane.chunks_exact_mut(cw))
        .zip(v_plane.chunks_exact_mut(cw))
    {
        for ((pair, u), v) in row[..w].chunks_exact(2).zip(u).zip(v) {
            *u = pair[0];
            *v = pair[1];
        }
    }
    Ok(())
}

fn check_len(what: &str, got: usize, need: usize) -> Result<(), String> {
    if got < need {
        Err(format!(
            "{what} picture of {got} bytes is too short (needs {need})"
        ))
    } else {
        Ok(())
    }
}

/// Decodes MJPEG pictures of one size to I420, reusing its decompressor and scratch buffer.
pub(crate) struct MjpegDecoder {
    decompressor: Decompressor,
    /// The JPEG's own planar layout when it is not 4:2:0.
    scratch: Vec<u8>,
}

impl MjpegDecoder {
    pub(crate) fn new() -> Result<MjpegDecoder, String> {
        Ok(MjpegDecoder {
            decompressor: Decompressor::new()
                .map_err(|e| format!("cannot create a JPEG decompressor: {e}"))?,
            scratch: Vec::new(),
        })
    }

    /// Decodes one JPEG of exactly `width` x `height` into `dst` (I420, limited range). 4:2:0
    /// JPEGs decode in place; 4:2:2 (what webcams send) and 4:4:4 have their chroma averaged
    /// down; greyscale gets neutral chroma.
    pub(crate) fn decode(
        &mut self,
        jpeg: &[u8],
        width: u32,
        height: u32,
        dst: &mut [u8],
    ) -> Result<(), String> {
        let header = self
            .decompressor
            .read_header(jpeg)
            .map_err(|e| format!("bad JPEG: {e}"))?;
        let (w, h) = (width as usize, height as usize);
        if (header.width, header.height) != (w, h) {
            return Err(format!(
                "JPEG of {}x{} where {width}x{height} was negotiated",
                header.width, header.height
            ));
        }
        if dst.len() != RawFrame::i420_len(width, height) {
            return Err("I420 buffer of the wrong size".into());
        }
        let (sub_w, sub_h) = match header.subsamp {
            Subsamp::Sub2x2 => (2, 2),
            Subsamp::Sub2x1 => (2, 1),
            Subsamp::None => (1, 1),
            Subsamp::Gray => (0, 0),
            other => {
                return Err(format!(
                    "JPEG chroma subsampling {other:?} is not supported"
                ));
            }
        };
        let image = |pixels| YuvImage {
            pixels,
            width: w,
            align: 1,
            height: h,
            subsamp: header.subsamp,
        };
        if sub_w == 2 && sub_h == 2 {
            // Even sizes: libjpeg-turbo's 4:2:0 layout with align 1 is exactly I420.
            self.decompressor
                .decompress_to_yuv(jpeg, image(&mut *dst))
                .map_err(|e| format!("JPEG decode: {e}"))?;
            let (u_at, _) = i420_split(w, h);
            let (luma, chroma) = dst.split_at_mut(u_at);
            map_in_place(luma, &LUMA_TO_LIMITED);
            map_in_place(chroma, &CHROMA_TO_LIMITED);
            return Ok(());
        }
        let needed = turbojpeg::yuv_pixels_len(w, 1, h, header.subsamp)
            .map_err(|e| format!("JPEG size: {e}"))?;
        self.scratch.resize(needed, 0);
        self.decompressor
            .decompress_to_yuv(jpeg, image(&mut self.scratch))
            .map_err(|e| format!("JPEG decode: {e}"))?;

        let (u_at, v_at) = i420_split(w, h);
        let (y_out, chroma_out) = dst.split_at_mut(u_at);
        let (u_out, v_out) = chroma_out.split_at_mut(v_at - u_at);
        for (out, full) in y_out.iter_mut().zip(&self.scratch[..w * h]) {
            *out = LUMA_TO_LIMITED[usize::from(*full)];
        }
        if sub_w == 0 {
            u_out.fill(128);
            v_out.fill(128);
            return Ok(());
        }
        // Source chroma planes: (w / sub_w) x (h / sub_h) each, tightly packed.
        let (cw, ch) = (w / sub_w, h / sub_h);
        let u_in = &self.scratch[w * h..w * h + cw * ch];
        let v_in = &self.scratch[w * h + cw * ch..w * h + 2 * cw * ch];
        downsample_chroma(u_in, cw, sub_w, sub_h, u_out, w / 2, h / 2);
        downsample_chroma(v_in, cw, sub_w, sub_h, v_out, w / 2, h / 2);
        map_in_place(u_out, &CHROMA_TO_LIMITED);
        map_in_place(v_out, &CHROMA_TO_LIMITED);
        Ok(())
    }
}

/// Averages a chroma plane (`in_w` wide) down to `out_w` x `out_h`: 2x1 pairs of rows when the
/// source is 4:2:2 (`sub_w` = 2), 2x2 blocks when it is 4:4:4 (`sub_w` = 1). Rounds to nearest.
fn downsample_chroma(
    src: &[u8],
    in_w: usize,
    sub_w: usize,
    sub_h: usize,
    dst: &mut [u8],
    out_w: usize,
    out_h: usize,
) {
    let rows_per_out = 2 / sub_h;
    let cols_per_out = 2 / sub_w;
    for (y, out_row) in dst.chunks_exact_mut(out_w).take(out_h).enumerate() {
        let top = &src[y * rows_per_out * in_w..][..in_w];
        let bottom = &src[(y * rows_per_out + rows_per_out - 1) * in_w..][..in_w];
        if cols_per_out == 1 {
            for ((out, a), b) in out_row.iter_mut().zip(top).zip(bottom) {
                *out = (u16::from(*a) + u16::from(*b)).div_ceil(2) as u8;
            }
        } else {
            for ((out, a), b) in out_row
                .iter_mut()
                .zip(top.chunks_exact(2))
                .zip(bottom.chunks_exact(2))
            {
                let sum = u16::from(a[0]) + u16::from(a[1]) + u16::from(b[0]) + u16::from(b[1]);
                *out = ((sum + 2) / 4) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A YUYV picture whose Y is x + y, U = 2x (per pair) + y, V = 255 - U.
    fn yuyv(width: usize, height: usize, stride: usize) -> Vec<u8> {
        let mut out = vec![0u8; stride * height];
        for y in 0..height {
            for pair in 0..width / 2 {
                let at = y * stride + pair * 4;
                let u = (2 * pair + y) as u8;
                out[at] = (2 * pair + y) as u8;
                out[at + 1] = u;
                out[at + 2] = (2 * pair + 1 + y) as u8;
                out[at + 3] = 255 - u;
            }
        }
        out
    }

    #[test]
    fn yuyv_with_padding_becomes_i420() {
        let (w, h, stride) = (16usize, 4usize, 40usize);
        let src = yuyv(w, h, stride);
        let mut dst = vec![0u8; RawFrame::i420_len(w as u32, h as u32)];
        yuyv_to_i420(&src, stride, w as u32, h as u32, &mut dst).unwrap();
        for y in 0..h {
            for x in 0..w {
                assert_eq!(dst[y * w + x], (x + y) as u8, "Y at {x},{y}");
            }
        }
        let (u_at, v_at) = i420_split(w, h);
        // Chroma of rows 0 and 1 (and 2 and 3) of each pair: the yuv crate averages or takes the
        // first row; either is within 1 of the mean.
        for cy in 0..h / 2 {
            for cx in 0..w / 2 {
                let mean = (2 * cx + 2 * cy) as f32 + 0.5;
                let u = dst[u_at + cy * (w / 2) + cx] as f32;
                let v = dst[v_at + cy * (w / 2) + cx] as f32;
                assert!((u - mean).abs() <= 1.0, "U {u} vs {mean}");
                assert!((v - (255.0 - mean)).abs() <= 1.0, "V {v}");
            }
        }
        assert!(yuyv_to_i420(&src[..100], stride, w as u32, h as u32, &mut dst).is_err());
    }

    #[test]
    fn nv12_with_padding_becomes_i420() {
        let (w, h, stride) = (8usize, 4usize, 12usize);
        let mut src = vec![0xEEu8; stride * h * 3 / 2];
        for y in 0..h {
            for x in 0..w {
                src[y * stride + x] = (10 * y + x) as u8;
            }
        }
        for cy in 0..h / 2 {
            for cx in 0..w / 2 {
                src[stride * h + cy * stride + 2 * cx] = (100 + 10 * cy + cx) as u8;
                src[stride * h + cy * stride + 2 * cx + 1] = (200 + 10 * cy + cx) as u8;
            }
        }
        let mut dst = vec![0u8; RawFrame::i420_len(w as u32, h as u32)];
        nv12_to_i420(&src, stride, w as u32, h as u32, &mut dst).unwrap();
        let frame = RawFrame {
            width: w as u32,
            height: h as u32,
            data: dst,
            capture: crate::frame::CaptureTime::now(),
        };
        let (y, u, v) = frame.planes();
        assert_eq!(&y[..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(&y[24..], &[30, 31, 32, 33, 34, 35, 36, 37]);
        assert_eq!(u, &[100, 101, 102, 103, 110, 111, 112, 113]);
        assert_eq!(v, &[200, 201, 202, 203, 210, 211, 212, 213]);
        assert!(nv12_to_i420(&src[..50], stride, 8, 4, &mut [0; 48]).is_err());
    }

    /// A smooth I420 test picture (gradients compress well, so JPEG error stays small).
    fn picture(w: usize, h: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let y = (0..w * h).map(|i| (16 + (i % w) * 200 / w) as u8).collect();
        let u = (0..(w / 2) * (h / 2))
            .map(|i| (64 + (i / (w / 2)) * 128 / (h / 2)) as u8)
            .collect();
        let v = (0..(w / 2) * (h / 2))
            .map(|i| (200 - (i % (w / 2)) * 100 / (w / 2)) as u8)
            .collect();
        (y, u, v)
    }

    /// Encodes the picture as a JPEG with the given chroma subsampling, as a webcam would: its
    /// 4:2:0 chroma repeated to fill the rows (4:2:2) or every pixel (4:4:4).
    fn jpeg(w: usize, h: usize, subsamp: Subsamp) -> Vec<u8> {
        let (y, u, v) = picture(w, h);
        let (rep_x, rep_y) = match subsamp {
            Subsamp::Sub2x2 => (1, 1),
            Subsamp::Sub2x1 => (1, 2),
            _ => (2, 2),
        };
        let mut pixels = y.clone();
        for plane in [&u, &v] {
            for row in plane.chunks_exact(w / 2) {
                for _ in 0..rep_y {
                    for c in row {
                        pixels.extend(std::iter::repeat_n(*c, rep_x));
                    }
                }
            }
        }
        let image = YuvImage {
            pixels: &pixels[..],
            width: w,
            align: 1,
            height: h,
            subsamp,
        };
        turbojpeg::compress_yuv(image, 95).unwrap().to_vec()
    }

    fn assert_close(got: &[u8], want: &[u8], tolerance: u8, what: &str) {
        assert_eq!(got.len(), want.len(), "{what} length");
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        assert!(worst <= tolerance, "{what}: off by up to {worst}");
    }

    #[test]
    fn mjpeg_422_420_444_and_grey_decode_to_i420() {
        let (w, h) = (64usize, 48usize);
        let (y, u, v) = picture(w, h);
        let mut decoder = MjpegDecoder::new().unwrap();
        for subsamp in [Subsamp::Sub2x1, Subsamp::Sub2x2, Subsamp::None] {
            let data = jpeg(w, h, subsamp);
            assert_eq!(turbojpeg::read_header(&data).unwrap().subsamp, subsamp);
            let mut dst = vec![0u8; RawFrame::i420_len(w as u32, h as u32)];
            decoder.decode(&data, w as u32, h as u32, &mut dst).unwrap();
            let (u_at, v_at) = i420_split(w, h);
            assert_close(
                &dst[..u_at],
                &limited(&y, true),
                6,
                &format!("{subsamp:?} Y"),
            );
            assert_close(
                &dst[u_at..v_at],
                &limited(&u, false),
                6,
                &format!("{subsamp:?} U"),
            );
            assert_close(
                &dst[v_at..],
                &limited(&v, false),
                6,
                &format!("{subsamp:?} V"),
            );
        }

        let grey = turbojpeg::compress(
            turbojpeg::Image {
                pixels: &y[..],
                width: w,
                pitch: w,
                height: h,
                format: turbojpeg::PixelFormat::GRAY,
            },
            95,
            Subsamp::Gray,
        )
        .unwrap();
        let mut dst = vec![0u8; RawFrame::i420_len(w as u32, h as u32)];
        decoder.decode(&grey, w as u32, h as u32, &mut dst).unwrap();
        assert_close(&dst[..w * h], &limited(&y, true), 3, "grey Y");
        assert!(dst[w * h..].iter().all(|c| *c == 128));
    }

    /// What a full-range plane is in limited range, by the formula (floating point).
    fn limited(full: &[u8], luma: bool) -> Vec<u8> {
        full.iter()
            .map(|&v| {
                let v = f64::from(v);
                let out = if luma {
                    16.0 + v * 219.0 / 255.0
                } else {
                    128.0 + (v - 128.0) * 224.0 / 255.0
                };
                out.round() as u8
            })
            .collect()
    }

    #[test]
    fn the_range_tables_follow_the_formula_and_its_ends() {
        let all: Vec<u8> = (0..=255).collect();
        let luma: Vec<u8> = all
            .iter()
            .map(|&v| LUMA_TO_LIMITED[usize::from(v)])
            .collect();
        let chroma: Vec<u8> = all
            .iter()
            .map(|&v| CHROMA_TO_LIMITED[usize::from(v)])
            .collect();
        assert_eq!(luma, limited(&all, true));
        assert_eq!(chroma, limited(&all, false));
        assert_eq!((luma[0], luma[255]), (16, 235));
        assert_eq!((chroma[0], chroma[128], chroma[255]), (16, 128, 240));
    }

    #[test]
    fn bad_jpegs_are_errors_not_panics() {
        let mut decoder = MjpegDecoder::new().unwrap();
        let mut dst = vec![0u8; RawFrame::i420_len(64, 48)];
        assert!(decoder.decode(b"not a jpeg", 64, 48, &mut dst).is_err());
        let data = jpeg(64, 48, Subsamp::Sub2x1);
        let e = decoder.decode(&data, 32, 24, &mut dst).unwrap_err();
        assert!(e.contains("JPEG of 64x48 where 32x24"), "{e}");
        // Truncated: libjpeg-turbo may decode what is there with a warning or refuse; no panic.
        let _ = decoder.decode(&data[..data.len() / 2], 64, 48, &mut dst);
    }

    #[test]
    fn chroma_downsampling_rounds_to_nearest() {
        let src = [10u8, 20, 11, 21, 30, 40, 31, 41];
        // 4:2:2 → 4:2:0: a 4x2 plane (already half width) averaged over row pairs.
        let mut out = [0u8; 4];
        downsample_chroma(&src, 4, 2, 1, &mut out, 4, 1);
        assert_eq!(out, [20, 30, 21, 31]);
        // 4:4:4 → 4:2:0: 2x2 blocks of a 4x2 plane.
        let mut out = [0u8; 2];
        downsample_chroma(&src, 4, 1, 1, &mut out, 2, 1);
        assert_eq!(out, [25, 26]);
    }
}
