//! A machine-readable stamp drawn into the top of every test-pattern picture and read back after
//! H.264 compression, to measure end-to-end latency (capture wall clock vs. the receiver's) and
//! frame loss (gaps in the frame counter). Readers exist in Rust ([`read`]) and, written from this
//! description, in the browser.
//!
//! # Layout (normative)
//!
//! All integer arithmetic below is integer division rounding down. `width` and `height` are the
//! picture's size in pixels.
//!
//! * Block side `b = max(8, 8 * floor(width / 640))`, i.e. about `width / 80`, a multiple of 8 so
//!   that every 4x4 transform block of H.264 is uniform (320 → 8, 640 → 8, 1280 → 16,
//!   1920 → 24, 2560 → 32, 3840 → 48).
//! * Columns `cols = min(80, floor(width / b))`; rows `rows = ceil(144 / cols)`.
//! * The band is the full-width strip `y ∈ [0, rows * b)` (see [`band_height`]); if it would be
//!   taller than `height / 2` the picture carries no stamp (band height 0).
//! * Bit `i` (0 ≤ i < 144) lives in cell `row = floor(i / cols)`, `col = i mod cols`, which covers
//!   `x ∈ [col*b, col*b + b)`, `y ∈ [row*b, row*b + b)`. Its centre pixel is
//!   `(col*b + b/2, row*b + b/2)`.
//! * A 1 bit is white (luma 235), a 0 bit black (luma 16). Everything else in the band (cells
//!   after bit 143, the strip right of `cols * b`) is black. The writer of the picture keeps the
//!   chroma under the band neutral (128), so in RGB the blocks are pure grey levels.
//! * Reading: sample each cell at (or around) its centre and threshold at mid-grey: luma ≥ 128
//!   (or, from an RGB canvas, grey/green ≥ 128) is a 1.
//! * The 144 bits are 18 bytes, bit 0 being the most significant bit of byte 0, all integers
//!   big-endian:
//!
//!   | bytes  | content                                                                |
//!   |--------|------------------------------------------------------------------------|
//!   | 0..2   | magic `0x43 0x50` ("CP")                                               |
//!   | 2..6   | frame counter, u32                                                     |
//!   | 6..14  | capture wall clock, microseconds since the Unix epoch, u64             |
//!   | 14..18 | CRC-32 (IEEE 802.3 / zlib: reflected poly 0xEDB88320, init and final   |
//!   |        | xor 0xFFFFFFFF) of bytes 0..14                                         |
//!
//!   A stamp is valid only if the magic and the CRC match: noise, blank or damaged pictures read
//!   as "no stamp" (1 in 2^48 chance of a false positive on random bits).
//!
//! Examples: 320x240 → b=8, 40 columns, 4 rows, band 32 px; 640x480 → b=8, 80x2, band 16 px;
//! 1280x720 → b=16, band 32 px; 1920x1080 → b=24, band 48 px; 3840x2160 → b=48, band 96 px.

use std::time::{SystemTime, UNIX_EPOCH};

/// "CP": tells a stamp from a picture that merely happens to have a valid CRC in its corner.
const MAGIC: [u8; 2] = [0x43, 0x50];
const PAYLOAD_LEN: usize = 18;
const BITS: u32 = (PAYLOAD_LEN * 8) as u32;
const MAX_COLUMNS: u32 = 80;
/// Video-range black and white: they map to RGB 0 and 255 in the browser.
const BLACK: u8 = 16;
const WHITE: u8 = 235;
const THRESHOLD: u32 = 128;
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// What a stamp carries: which picture this is and when it was captured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamp {
    /// Frame counter of the source, from 0, incremented for every picture it yields.
    pub frame: u32,
    /// Capture wall clock in microseconds since the Unix epoch.
    pub unix_micros: u64,
}

impl Stamp {
    /// A stamp for `frame` captured at `wall` (a wall clock before 1970 reads as 0).
    pub fn new(frame: u32, wall: SystemTime) -> Self {
        let unix_micros = wall
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self { frame, unix_micros }
    }

    fn to_bytes(self) -> [u8; PAYLOAD_LEN] {
        let mut b = [0u8; PAYLOAD_LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2..6].copy_from_slice(&self.frame.to_be_bytes());
        b[6..14].copy_from_slice(&self.unix_micros.to_be_bytes());
        let crc = CRC32.checksum(&b[0..14]);
        b[14..18].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn from_bytes(b: &[u8; PAYLOAD_LEN]) -> Option<Self> {
        if b[0..2] != MAGIC {
            return None;
        }
        let crc = u32::from_be_bytes([b[14], b[15], b[16], b[17]]);
        if CRC32.checksum(&b[0..14]) != crc {
            return None;
        }
        let frame = u32::from_be_bytes([b[2], b[3], b[4], b[5]]);
        let mut micros = [0u8; 8];
        micros.copy_from_slice(&b[6..14]);
        Some(Self {
            frame,
            unix_micros: u64::from_be_bytes(micros),
        })
    }
}

/// Where the cells are for one picture size.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    block: u32,
    columns: u32,
    rows: u32,
}

impl Geometry {
    fn of(width: u32, height: u32) -> Option<Self> {
        let block = (8 * (width / 640)).max(8);
        let columns = (width / block).min(MAX_COLUMNS);
        if columns == 0 {
            return None;
        }
        let rows = BITS.div_ceil(columns);
        // A stamp that eats more than half the picture is not worth drawing.
        if rows * block > height / 2 {
            return None;
        }
        Some(Self {
            block,
            columns,
            rows,
        })
    }

    fn band(&self) -> u32 {
        self.rows * self.block
    }

    /// Top-left corner of the cell holding bit `i`.
    fn cell(&self, i: u32) -> (usize, usize) {
        let (row, col) = (i / self.columns, i % self.columns);
        ((col * self.block) as usize, (row * self.block) as usize)
    }
}

/// Height in rows of the stamp band at the top of a `width` x `height` picture (0 if the picture
/// is too small to carry one). A pattern generator leaves these rows to [`write`].
pub fn band_height(width: u32, height: u32) -> u32 {
    Geometry::of(width, height).map_or(0, |g| g.band())
}

/// Draws `stamp` into the luma plane `y` (stride = `width`) of a `width` x `height` picture,
/// overwriting the whole band. Does nothing if the picture is too small or `y` too short.
pub fn write(stamp: &Stamp, y: &mut [u8], width: u32, height: u32) {
    let Some(g) = Geometry::of(width, height) else {
        return;
    };
    let w = width as usize;
    let band = g.band() as usize;
    let Some(band_plane) = y.get_mut(..w * band) else {
        return;
    };
    band_plane.fill(BLACK);
    let b = g.block as usize;
    let bytes = stamp.to_bytes();
    for i in 0..BITS {
        let bit = (bytes[(i / 8) as usize] >> (7 - i % 8)) & 1;
        if bit == 0 {
            continue;
        }
        let (x0, y0) = g.cell(i);
        for row in band_plane.chunks_exact_mut(w).skip(y0).take(b) {
            row[x0..x0 + b].fill(WHITE);
        }
    }
}

/// Reads a stamp back from a luma plane with the given stride. Returns `None` for anything that
/// is not a valid stamp (wrong magic or CRC, picture too small, plane too short).
pub fn read(y: &[u8], stride: usize, width: u32, height: u32) -> Option<Stamp> {
    let g = Geometry::of(width, height)?;
    let band = g.band() as usize;
    if stride < width as usize || y.len() < stride * (band - 1) + width as usize {
        return None;
    }
    let b = g.block as usize;
    // Average the central half of the cell: edges are where deblocking and ringing live.
    let (inner, off) = (b / 2, b / 4);
    let mut bytes = [0u8; PAYLOAD_LEN];
    for i in 0..BITS {
        let (x0, y0) = g.cell(i);
        let mut sum = 0u32;
        for r in 0..inner {
            let start = (y0 + off + r) * stride + x0 + off;
            sum += y[start..start + inner]
                .iter()
                .map(|&v| u32::from(v))
                .sum::<u32>();
        }
        if sum >= THRESHOLD * (inner * inner) as u32 {
            bytes[(i / 8) as usize] |= 1 << (7 - i % 8);
        }
    }
    Stamp::from_bytes(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [(u32, u32); 7] = [
        (320, 240),
        (640, 480),
        (800, 600),
        (1280, 720),
        (1920, 1080),
        (2560, 1440),
        (3840, 2160),
    ];

    fn sample() -> Stamp {
        Stamp {
            frame: 0xDEAD_BEEF,
            unix_micros: 1_763_990_000_123_456,
        }
    }

    #[test]
    fn documented_band_heights() {
        assert_eq!(band_height(320, 240), 32);
        assert_eq!(band_height(640, 480), 16);
        assert_eq!(band_height(1280, 720), 32);
        assert_eq!(band_height(1920, 1080), 48);
        assert_eq!(band_height(3840, 2160), 96);
        assert_eq!(band_height(64, 48), 0);
    }

    #[test]
    fn round_trip_at_several_sizes() {
        for (w, h) in SIZES {
            for stamp in [
                sample(),
                Stamp {
                    frame: 0,
                    unix_micros: 0,
                },
                Stamp {
                    frame: u32::MAX,
                    unix_micros: u64::MAX,
                },
            ] {
                let mut y = vec![77u8; (w * h) as usize];
                write(&stamp, &mut y, w, h);
                assert_eq!(read(&y, w as usize, w, h), Some(stamp), "{w}x{h}");
                // Rows below the band are left alone.
                let band = band_height(w, h) as usize;
                assert!(y[band * w as usize..].iter().all(|&v| v == 77));
            }
        }
    }

    #[test]
    fn survives_mild_distortion_and_wider_stride() {
        let (w, h) = (1280u32, 720u32);
        let stride = 1344usize;
        let mut plane = vec![0u8; (w * h) as usize];
        write(&sample(), &mut plane, w, h);
        let mut y = vec![128u8; stride * h as usize];
        for (r, row) in plane.chunks_exact(w as usize).enumerate() {
            for (x, &v) in row.iter().enumerate() {
                // Pull everything 60 levels towards mid-grey, add a ripple.
                let v = i32::from(v);
                let v = v + (128 - v).signum() * 60 + ((x + r) % 7) as i32 - 3;
                y[r * stride + x] = v.clamp(0, 255) as u8;
            }
        }
        assert_eq!(read(&y, stride, w, h), Some(sample()));
    }

    #[test]
    fn rejects_garbage_noise_and_blank() {
        let (w, h) = (640u32, 480u32);
        let n = (w * h) as usize;
        assert_eq!(read(&vec![0u8; n], w as usize, w, h), None);
        assert_eq!(read(&vec![255u8; n], w as usize, w, h), None);
        assert_eq!(read(&vec![BLACK; n], w as usize, w, h), None);
        // Noise from a simple LCG, many seeds.
        let mut state = 0x1234_5678_u32;
        for _ in 0..200 {
            let y: Vec<u8> = (0..n)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 24) as u8
                })
                .collect();
            assert_eq!(read(&y, w as usize, w, h), None);
        }
        // A valid stamp with one cell flipped fails the CRC.
        let mut y = vec![0u8; n];
        write(&sample(), &mut y, w, h);
        let g = Geometry::of(w, h).expect("geometry");
        let (x0, y0) = g.cell(37);
        let b = g.block as usize;
        for r in y0..y0 + b {
            for v in &mut y[r * w as usize + x0..r * w as usize + x0 + b] {
                *v = if *v == WHITE { BLACK } else { WHITE };
            }
        }
        assert_eq!(read(&y, w as usize, w, h), None);
        // Too short a plane is not a panic.
        assert_eq!(read(&y[..100], w as usize, w, h), None);
    }

    #[test]
    fn crc_is_the_zlib_one() {
        // The JavaScript reader will use the standard CRC-32; pin its check value.
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn stamp_from_wall_clock() {
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_000_001);
        assert_eq!(Stamp::new(3, t).unix_micros, 1_700_000_000_000_001);
        assert_eq!(Stamp::new(3, t).frame, 3);
    }
}
