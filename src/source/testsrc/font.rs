//! A tiny 5x7 bitmap font, just the glyphs the test pattern's clock needs, drawn scaled into a
//! luma plane.

/// Width and height of a glyph cell in font pixels (5x7 glyph plus one column/row of spacing).
pub const CELL_W: usize = 6;
pub const CELL_H: usize = 8;
const GLYPH_W: usize = 5;

/// Rows top to bottom; bit 4 is the leftmost column.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        // Space and anything the pattern never prints.
        _ => [0; 7],
    }
}

/// Draws `text` with its top-left corner at (`x`, `y`), each font pixel a `scale` x `scale`
/// square of value `value`, into a plane of `width` x (len / width) pixels (stride = width).
/// Whatever falls outside the plane is clipped.
pub fn draw(
    plane: &mut [u8],
    width: usize,
    x: usize,
    y: usize,
    scale: usize,
    text: &str,
    value: u8,
) {
    if width == 0 {
        return;
    }
    let height = plane.len() / width;
    for (i, c) in text.chars().enumerate() {
        let gx = x + i * CELL_W * scale;
        for (r, bits) in glyph(c).iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                let px = gx + col * scale;
                let py = y + r * scale;
                if px >= width || py >= height {
                    continue;
                }
                let run = scale.min(width - px);
                for row in py..(py + scale).min(height) {
                    plane[row * width + px..row * width + px + run].fill(value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_scaled_and_clips() {
        let mut plane = vec![0u8; 20 * 10];
        draw(&mut plane, 20, 0, 0, 2, "1", 9);
        // '1' row 0 is 0x04: column 2 lit → pixels x 4..6, rows 0..2.
        assert_eq!(&plane[0..8], &[0, 0, 0, 0, 9, 9, 0, 0]);
        assert_eq!(plane[20 + 4], 9);
        // Far outside: nothing happens, nothing panics.
        draw(&mut plane, 20, 18, 8, 3, "8888", 9);
        draw(&mut plane, 20, 100, 100, 3, "8", 9);
    }
}
