//! The tray icon's image: a chat bubble, with the total unread count drawn into it (readable up to 99,
//! then "99+") and a dimmed look when every connection is down.
//!
//! Drawn by hand into an RGBA buffer: the digits come from a 3×5 bitmap font scaled up, so the icon
//! needs no font files and looks the same on every platform. Trays show it at 16–32 px, a quarter to
//! half of its size: the count is drawn large (each stroke at least 5 of its 64 pixels, so at least
//! one whole pixel at 16 px), in white on a dark red (or, offline, a dark grey) badge over most of the
//! bubble — a count must be readable at a glance, and the bubble is recognisable from its edge.

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
    let Some(text) = label(unread) else {
        // Three dots inside, as on a chat bubble.
        for x in [20.0, 30.0, 40.0] {
            img.disc(x, 28.0, 3.5, [0xff, 0xff, 0xff, 0xff]);
        }
        return img.pixels;
    };
    img.count(&text, online);
    img.pixels
}

/// A contact's own tray icon (a contact pinned to the tray): their picture (`face`, [`SIZE`]² RGBA)
/// in a circle — or a disc of their colour (`hue`, 0–359) when there is none — their presence as a
/// shape at the top right (the same shapes as in the panel: a full dot online, a square busy, a half
/// dot idle, a dot with a bar do-not-disturb, a ring offline) and the unread count at the bottom
/// right, drawn as on the app's icon.
pub fn contact_icon(face: Option<&[u8]>, hue: u32, state: pinchat_proto::Presence, unread: u32) -> Vec<u8> {
    use pinchat_proto::Presence;
    let mut img = Canvas::new();
    let fallback = hsl_to_rgb(hue % 360, 0.55, 0.45);
    let (c, r) = (SIZE as f32 / 2.0, SIZE as f32 / 2.0 - 1.0);
    for y in 0..SIZE {
        for x in 0..SIZE {
            let (dx, dy) = (x as f32 + 0.5 - c, y as f32 + 0.5 - c);
            if dx * dx + dy * dy > r * r {
                continue;
            }
            let i = ((y * SIZE + x) * 4) as usize;
            let rgba = match face {
                Some(f) if f.len() == (SIZE * SIZE * 4) as usize => [f[i], f[i + 1], f[i + 2], 0xff],
                _ => [fallback[0], fallback[1], fallback[2], 0xff],
            };
            img.set(x, y, rgba);
        }
    }
    // The presence mark, on a white ring so that it stands out of any picture.
    let (mx, my, mr) = (49.0, 15.0, 13.0);
    let white = [0xff, 0xff, 0xff, 0xff];
    img.disc(mx, my, mr + 3.0, white);
    match state {
        Presence::Online => img.disc(mx, my, mr, [0x12, 0xb7, 0x6a, 0xff]),
        Presence::Busy => {
            let (x0, y0, side) = ((mx - mr) as u32 + 1, (my - mr) as u32 + 1, (2.0 * mr) as u32 - 1);
            for y in y0..y0 + side {
                for x in x0..x0 + side {
                    img.set(x, y, [0xd9, 0x2d, 0x20, 0xff]);
                }
            }
        }
        Presence::Idle => {
            let amber = [0xf7, 0x90, 0x09, 0xff];
            img.disc(mx, my, mr, amber);
            img.disc(mx, my, mr - 4.0, white);
            // The left half filled: a half moon.
            for y in 0..SIZE {
                for x in 0..SIZE {
                    let (dx, dy) = (x as f32 + 0.5 - mx, y as f32 + 0.5 - my);
                    if dx < 0.0 && dx * dx + dy * dy <= mr * mr {
                        img.set(x, y, amber);
                    }
                }
            }
        }
        Presence::DoNotDisturb => {
            img.disc(mx, my, mr, [0xb4, 0x23, 0x18, 0xff]);
            for y in (my - 2.0) as u32..(my + 2.0) as u32 {
                for x in (mx - mr + 4.0) as u32..(mx + mr - 4.0) as u32 {
                    img.set(x, y, white);
                }
            }
        }
        Presence::Offline => {
            img.disc(mx, my, mr, [0x66, 0x70, 0x85, 0xff]);
            img.disc(mx, my, mr - 4.0, white);
        }
    }
    if let Some(text) = label(unread) {
        img.count(&text, true);
    }
    img.pixels
}

/// An RGB colour from hue (degrees), saturation and lightness (0–1), as CSS's `hsl()` — the panel
/// colours a contact without a picture this way, from the same hue.
fn hsl_to_rgb(h: u32, s: f32, l: f32) -> [u8; 3] {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let hp = h as f32 / 60.0;
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    [r, g, b].map(|v| ((v + m) * 255.0).round() as u8)
}

/// The hue the panel gives a contact's name (its `avatar()`: a 31-based hash of the characters).
pub fn name_hue(name: &str) -> u32 {
    let name = if name.is_empty() { "?" } else { name };
    name.chars()
        .fold(0u32, |h, c| h.wrapping_mul(31).wrapping_add(c as u32))
        % 360
}

impl Canvas {
    /// The unread count's badge at the bottom right.
    fn count(&mut self, text: &str, online: bool) {
        // Strokes of 7, 6 or 5 pixels for one, two or three characters; the gap between digits is
        // as wide as a stroke, so that "11" stays two ones when scaled down.
        let scale = match text.len() {
            1 => 7,
            2 => 6,
            _ => 5,
        };
        let glyph_w = 3 * scale;
        let gap = scale;
        let text_w = text.len() as u32 * glyph_w + (text.len() as u32 - 1) * gap;
        let text_h = 5 * scale;
        let pad = 3;
        let w = (text_w + 2 * pad).max(text_h + 2 * pad).min(SIZE);
        let h = text_h + 2 * pad;
        let (x0, y0) = (SIZE - w, SIZE - h);
        // White on these is 5.6:1 (red) and 7.6:1 (grey): readable on light and dark panels.
        let badge = if online {
            [0xc6, 0x28, 0x28, 0xff]
        } else {
            [0x4b, 0x50, 0x58, 0xff]
        };
        self.pill(x0, y0, w, h, badge);
        let mut x = x0 + (w - text_w) / 2;
        for c in text.chars() {
            self.glyph(c, x, y0 + pad, scale, [0xff, 0xff, 0xff, 0xff]);
            x += glyph_w + gap;
        }
    }
}

/// The application's icon (menus, launchers, installers) at `size`×`size` pixels, RGBA with straight
/// alpha: the bubble with its three dots, with no count. Drawn from the same shapes as the tray icon,
/// with 4×4 samples a pixel, so that it is smooth at every size from 16 to 1024.
pub fn app_icon(size: u32) -> Vec<u8> {
    const BODY: [f32; 3] = [37.0, 140.0, 244.0];
    let scale = SIZE as f32 / size as f32;
    let in_disc = |x: f32, y: f32, cx: f32, cy: f32, r: f32| (x - cx).powi(2) + (y - cy).powi(2) <= r * r;
    let in_tail = |x: f32, y: f32| {
        let (a, b, c) = ((10.0, 40.0), (22.0, 50.0), (6.0, 58.0));
        let edge = |p: (f32, f32), q: (f32, f32)| (q.0 - p.0) * (y - p.1) - (q.1 - p.1) * (x - p.0);
        let (e1, e2, e3) = (edge(a, b), edge(b, c), edge(c, a));
        (e1 >= 0.0 && e2 >= 0.0 && e3 >= 0.0) || (e1 <= 0.0 && e2 <= 0.0 && e3 <= 0.0)
    };
    let mut pixels = Vec::with_capacity((size * size * 4) as usize);
    for py in 0..size {
        for px in 0..size {
            let (mut body, mut dots) = (0u32, 0u32);
            for sy in 0..4 {
                for sx in 0..4 {
                    let x = (px as f32 + (sx as f32 + 0.5) / 4.0) * scale;
                    let y = (py as f32 + (sy as f32 + 0.5) / 4.0) * scale;
                    if in_disc(x, y, 30.0, 28.0, 24.0) || in_tail(x, y) {
                        body += 1;
                        if [20.0, 30.0, 40.0].iter().any(|&cx| in_disc(x, y, cx, 28.0, 3.5)) {
                            dots += 1;
                        }
                    }
                }
            }
            if body == 0 {
                pixels.extend_from_slice(&[0, 0, 0, 0]);
                continue;
            }
            // The dots lie inside the bubble: the colour is the bubble's mixed with white, and the
            // alpha the bubble's coverage.
            let white = dots as f32 / body as f32;
            for c in BODY {
                pixels.push((c + (255.0 - c) * white).round() as u8);
            }
            pixels.push((body as f32 * 255.0 / 16.0).round() as u8);
        }
    }
    pixels
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
        assert!(blue(&on) > 300);
        assert_eq!(blue(&off), 0);
        // The same digits are drawn either way.
        assert_eq!(white_pixels(&on), white_pixels(&off));
    }

    /// The icon scaled down to `size` pixels the way a tray does (each pixel the mean of the ones it
    /// covers).
    fn scaled(img: &[u8], size: u32) -> Vec<u8> {
        let mut out = vec![0u8; (size * size * 4) as usize];
        let f = SIZE as f64 / size as f64;
        for y in 0..size {
            for x in 0..size {
                let (sx0, sx1) = (
                    (x as f64 * f) as u32,
                    (((x + 1) as f64 * f).ceil() as u32).min(SIZE),
                );
                let (sy0, sy1) = (
                    (y as f64 * f) as u32,
                    (((y + 1) as f64 * f).ceil() as u32).min(SIZE),
                );
                let mut sum = [0u64; 4];
                for sy in sy0..sy1 {
                    for sx in sx0..sx1 {
                        let i = ((sy * SIZE + sx) * 4) as usize;
                        for c in 0..4 {
                            sum[c] += u64::from(img[i + c]);
                        }
                    }
                }
                let n = u64::from((sx1 - sx0) * (sy1 - sy0));
                let o = ((y * size + x) * 4) as usize;
                for c in 0..4 {
                    out[o + c] = (sum[c] / n) as u8;
                }
            }
        }
        out
    }

    /// At every size trays use, every count keeps strokes that are whole white pixels (not a blur of
    /// pink), and a count of 10 shows two separate digits. The images are written for people to look
    /// at: `target/badge/<count>-<size>px.png`.
    #[test]
    fn counts_stay_readable_at_tray_sizes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/badge");
        let _ = std::fs::create_dir_all(&dir);
        for count in [1, 4, 8, 10, 11, 42, 99, 100] {
            for online in [true, false] {
                let img = render(count, online);
                for size in [16, 20, 22, 24, 32] {
                    let small = scaled(&img, size);
                    let whitest = small
                        .chunks(4)
                        .map(|p| p[0].min(p[1]).min(p[2]))
                        .max()
                        .unwrap_or(0);
                    assert!(
                        whitest >= 225,
                        "{count} at {size} px ({online}): the digits blur (whitest {whitest})"
                    );
                    if online {
                        let _ = write_png(&dir.join(format!("{count}-{size}px.png")), &small, size);
                    }
                }
            }
        }
        // "10" at 22 px: along the digits' middle row, white, then not, then white again.
        let small = scaled(&render(10, true), 22);
        let runs = (0..22u32)
            .map(|x| {
                let i = ((17 * 22 + x) * 4) as usize;
                small[i].min(small[i + 1]).min(small[i + 2]) > 200
            })
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] != w[1])
            .count();
        assert!(runs >= 4, "the two digits of 10 merge at 22 px");
    }

    /// A contact's own icon: each presence has its own shape (not only a colour), a count shows, and a
    /// picture is drawn when there is one. The images are written for people to look at:
    /// `target/badge/contact-<state>-<size>px.png`.
    #[test]
    fn contact_icons_show_presence_by_shape_and_the_count() {
        use pinchat_proto::Presence;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/badge");
        let _ = std::fs::create_dir_all(&dir);
        let states = [
            Presence::Online,
            Presence::Busy,
            Presence::Idle,
            Presence::DoNotDisturb,
            Presence::Offline,
        ];
        let hue = name_hue("Alice Chen");
        let icons: Vec<Vec<u8>> = states.iter().map(|&s| contact_icon(None, hue, s, 0)).collect();
        // The presence marks differ in shape: compared in grey levels, no two are alike.
        let grey = |img: &[u8]| -> Vec<u8> {
            img.chunks(4)
                .map(|p| ((u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2])) / 3 / 32) as u8)
                .collect()
        };
        for i in 0..icons.len() {
            for j in i + 1..icons.len() {
                assert_ne!(
                    grey(&icons[i]),
                    grey(&icons[j]),
                    "{:?} and {:?}",
                    states[i],
                    states[j]
                );
            }
        }
        assert!(white_pixels(&contact_icon(None, hue, Presence::Online, 3)) > white_pixels(&icons[0]));
        let face = vec![0x20u8; (SIZE * SIZE * 4) as usize];
        assert_ne!(contact_icon(Some(&face), hue, Presence::Online, 0), icons[0]);
        for (state, img) in states.iter().zip(&icons) {
            for size in [16, 22, 32] {
                let _ = write_png(
                    &dir.join(format!("contact-{state:?}-{size}px.png")),
                    &scaled(img, size),
                    size,
                );
            }
        }
        let _ = write_png(
            &dir.join("contact-Online-3-64px.png"),
            &contact_icon(None, hue, Presence::Online, 3),
            SIZE,
        );
        // The hue agrees with the panel's (app.js `avatar()`): "A" is 65.
        assert_eq!(name_hue("A"), 65);
        assert_eq!(name_hue(""), name_hue("?"));
    }

    fn write_png(path: &std::path::Path, rgba: &[u8], size: u32) -> std::io::Result<()> {
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut encoder = png::Encoder::new(file, size, size);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer.write_image_data(rgba).map_err(std::io::Error::other)
    }
}
