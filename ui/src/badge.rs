//! The tray icon's image: a chat bubble, with the total unread count drawn into it (readable up to 99,
//! then "99+") and a dimmed look when every connection is down.
//!
//! Drawn by hand into an RGBA buffer: the digits come from a 3×5 bitmap font scaled up, so the icon
//! needs no font files and looks the same on every platform.

/// Width and height of the icon, in pixels.
pub const SIZE: u32 = 64;

/// The 3×5 glyphs, one row per byte (bits 2..0, left to right).
const GLYPHS: [(char, [u8; 5]); 11] = [
    ('0', [0b111, 0b101, 0b101, 0b101, 0b111]),
    ('1', [0b010, 0b110, 0b010, 0b010, 0b111]),
    ('2', [0b111, 0b001, 0b111, 0b100, 0b111]),
    ('3', [0b111, 0b001, 0b111, 0b001, 0b111]),
    ('4', [0b101, 0b101, 0b111, 0b001, 0b001]),
    ('5', [0b111, 0b100, 0b111, 0b001, 0b111]),
    ('6', [0b111, 0b100, 0b111, 0b101, 0b111]),
    ('7', [0b111, 0b001, 0b010, 0b010, 0b010]),
    ('8', [0b111, 0b101, 0b111, 0b101, 0b111]),
    ('9', [0b111, 0b101, 0b111, 0b001, 0b111]),
    ('+', [0b000, 0b010, 0b111, 0b010, 0b000]),
];

/// What the badge says for `unread` messages: nothing for none, the number up to 99, then "99+".
pub fn label(unread: u32) -> Option<String> {
    match unread {
        0 => None,
        1..=99 => Some(unread.to_string()),
        _ => Some("99+".to_owned()),
    }
}

/// The icon for `unread` messages; `online` is false when every connection is down.
pub fn render(unread: u32, online: bool) -> Vec<u8> {
    let mut img = Canvas::new();
    // The bubble: a disc with a small tail at the bottom left.
    let body = if online {
        [0x25, 0x8c, 0xf4, 0xff]
    } else {
        [0x8a, 0x8f, 0x98, 0xff]
    };
    img.disc(30.0, 28.0, 24.0, body);
    img.triangle((10.0, 40.0), (22.0, 50.0), (6.0, 58.0), body);
    // Three dots inside, as on a chat bubble.
    for x in [20.0, 30.0, 40.0] {
        img.disc(x, 28.0, 3.5, [0xff, 0xff, 0xff, 0xff]);
    }
    if let Some(text) = label(unread) {
        let scale = if text.len() > 2 { 3 } else { 4 };
        let glyph_w = 3 * scale;
        let gap = scale;
        let text_w = text.len() as u32 * glyph_w + (text.len() as u32 - 1) * gap;
        let text_h = 5 * scale;
        let pad = 4;
        let w = (text_w + 2 * pad).max(text_h + 2 * pad);
        let h = text_h + 2 * pad;
        let (x0, y0) = (SIZE - w, SIZE - h);
        let red = if online {
            [0xe5, 0x39, 0x35, 0xff]
        } else {
            [0x9e, 0x6b, 0x6a, 0xff]
        };
        img.pill(x0, y0, w, h, red);
        let mut x = x0 + (w - text_w) / 2;
        for c in text.chars() {
            img.glyph(c, x, y0 + pad, scale, [0xff, 0xff, 0xff, 0xff]);
            x += glyph_w + gap;
        }
    }
    img.pixels
}

struct Canvas {
    pixels: Vec<u8>,
}

impl Canvas {
    fn new() -> Canvas {
        Canvas {
            pixels: vec![0; (SIZE * SIZE * 4) as usize],
        }
    }

    fn set(&mut self, x: u32, y: u32, rgba: [u8; 4]) {
        if x < SIZE && y < SIZE {
            let i = ((y * SIZE + x) * 4) as usize;
            self.pixels[i..i + 4].copy_from_slice(&rgba);
        }
    }

    fn disc(&mut self, cx: f32, cy: f32, r: f32, rgba: [u8; 4]) {
        for y in 0..SIZE {
            for x in 0..SIZE {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                if dx * dx + dy * dy <= r * r {
                    self.set(x, y, rgba);
                }
            }
        }
    }

    fn triangle(&mut self, a: (f32, f32), b: (f32, f32), c: (f32, f32), rgba: [u8; 4]) {
        let edge =
            |p: (f32, f32), q: (f32, f32), x: f32, y: f32| (q.0 - p.0) * (y - p.1) - (q.1 - p.1) * (x - p.0);
        for y in 0..SIZE {
            for x in 0..SIZE {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let (e1, e2, e3) = (edge(a, b, px, py), edge(b, c, px, py), edge(c, a, px, py));
                if (e1 >= 0.0 && e2 >= 0.0 && e3 >= 0.0) || (e1 <= 0.0 && e2 <= 0.0 && e3 <= 0.0) {
                    self.set(x, y, rgba);
                }
            }
        }
    }

    /// A rectangle with fully rounded ends.
    fn pill(&mut self, x0: u32, y0: u32, w: u32, h: u32, rgba: [u8; 4]) {
        let r = h as f32 / 2.0;
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let cx = px.clamp(x0 as f32 + r, (x0 + w) as f32 - r);
                let cy = y0 as f32 + r;
                if (px - cx).powi(2) + (py - cy).powi(2) <= r * r {
                    self.set(x, y, rgba);
                }
            }
        }
    }

    fn glyph(&mut self, c: char, x0: u32, y0: u32, scale: u32, rgba: [u8; 4]) {
        let Some((_, rows)) = GLYPHS.iter().find(|(g, _)| *g == c) else {
            return;
        };
        for (row, bits) in rows.iter().enumerate() {
            for col in 0..3 {
                if bits & (0b100 >> col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            self.set(x0 + col * scale + dx, y0 + row as u32 * scale + dy, rgba);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn white_pixels(img: &[u8]) -> usize {
        img.chunks(4).filter(|p| p == &[0xff, 0xff, 0xff, 0xff]).count()
    }

    #[test]
    fn labels_stop_at_99() {
        assert_eq!(label(0), None);
        assert_eq!(label(7).as_deref(), Some("7"));
        assert_eq!(label(99).as_deref(), Some("99"));
        assert_eq!(label(100).as_deref(), Some("99+"));
        assert_eq!(label(u32::MAX).as_deref(), Some("99+"));
    }

    #[test]
    fn the_count_is_drawn_and_differs_by_number() {
        let none = render(0, true);
        let one = render(1, true);
        let eight = render(8, true);
        assert_eq!(none.len(), (SIZE * SIZE * 4) as usize);
        // Digits are white pixels beyond the bubble's three dots.
        assert!(white_pixels(&one) > white_pixels(&none));
        assert!(
            white_pixels(&eight) > white_pixels(&one),
            "8 has more lit pixels than 1"
        );
        assert_ne!(render(98, true), render(99, true));
        assert_eq!(
            render(100, true),
            render(5000, true),
            "everything above 99 reads 99+"
        );
    }

    #[test]
    fn offline_is_dimmed() {
        let on = render(3, true);
        let off = render(3, false);
        let blue = |img: &[u8]| img.chunks(4).filter(|p| p == &[0x25, 0x8c, 0xf4, 0xff]).count();
        assert!(blue(&on) > 500);
        assert_eq!(blue(&off), 0);
        // The same digits are drawn either way.
        assert_eq!(white_pixels(&on), white_pixels(&off));
    }
}
