//! The installers' icons (`installers/icons/`) are the app's own icon ([`pinchat_ui::badge::app_icon`]):
//! PNGs for the Linux hicolor theme, `pinchat.ico` for Windows and `pinchat.icns` for macOS. They are
//! committed, so that packaging needs no build step of its own, and this test keeps them from drifting
//! from the renderer: it decodes each file and compares pixels. After changing the icon, write them
//! again with `PINCHAT_WRITE_ICONS=1 cargo test -p pinchat-ui --test installer_icons`.

use pinchat_ui::badge::app_icon;
use std::path::{Path, PathBuf};

/// The hicolor sizes the .deb installs.
const PNG_SIZES: [u32; 9] = [16, 22, 24, 32, 48, 64, 128, 256, 512];
/// The sizes in the Windows icon (256 is the largest Windows shows, in Explorer's large views).
const ICO_SIZES: [u32; 6] = [16, 24, 32, 48, 64, 256];
/// The ICNS types with PNG data that macOS 10.8 and later read, and their sizes in pixels.
const ICNS_TYPES: [(&[u8; 4], u32); 7] = [
    (b"ic11", 32),  // 16 pt @2x
    (b"ic12", 64),  // 32 pt @2x
    (b"ic07", 128), // 128 pt
    (b"ic13", 256), // 128 pt @2x
    (b"ic08", 256), // 256 pt
    (b"ic14", 512), // 256 pt @2x
    (b"ic09", 512), // 512 pt
];

fn icons_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../installers/icons")
}

fn encode(size: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, size, size);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().expect("png header");
    writer.write_image_data(&app_icon(size)).expect("png data");
    writer.finish().expect("png end");
    out
}

fn decode(bytes: &[u8]) -> (u32, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    assert_eq!(info.color_type, png::ColorType::Rgba);
    assert_eq!(info.width, info.height, "icons are square");
    buf.truncate(info.buffer_size());
    (info.width, buf)
}

/// A Windows icon whose images are PNGs (Windows Vista and later read these at every size).
fn ico() -> Vec<u8> {
    let images: Vec<(u32, Vec<u8>)> = ICO_SIZES.iter().map(|&s| (s, encode(s))).collect();
    let mut out = Vec::new();
    out.extend_from_slice(&[0, 0, 1, 0]);
    out.extend_from_slice(&(images.len() as u16).to_le_bytes());
    let mut offset = 6 + 16 * images.len() as u32;
    for (size, png) in &images {
        // 0 in the one-byte width and height means 256.
        out.push((*size % 256) as u8);
        out.push((*size % 256) as u8);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&32u16.to_le_bytes());
        out.extend_from_slice(&(png.len() as u32).to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += png.len() as u32;
    }
    for (_, png) in images {
        out.extend_from_slice(&png);
    }
    out
}

/// The images of an ICO file, as (size, PNG bytes).
fn read_ico(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
    assert_eq!(&bytes[..4], &[0, 0, 1, 0], "an icon resource");
    let count = u16::from_le_bytes([bytes[4], bytes[5]]) as usize;
    (0..count)
        .map(|i| {
            let e = &bytes[6 + 16 * i..6 + 16 * (i + 1)];
            let size = if e[0] == 0 { 256 } else { e[0] as u32 };
            let len = u32::from_le_bytes(e[8..12].try_into().unwrap()) as usize;
            let at = u32::from_le_bytes(e[12..16].try_into().unwrap()) as usize;
            (size, bytes[at..at + len].to_vec())
        })
        .collect()
}

fn icns() -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, size) in ICNS_TYPES {
        let png = encode(size);
        body.extend_from_slice(kind);
        body.extend_from_slice(&(png.len() as u32 + 8).to_be_bytes());
        body.extend_from_slice(&png);
    }
    let mut out = b"icns".to_vec();
    out.extend_from_slice(&(body.len() as u32 + 8).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn read_icns(bytes: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    assert_eq!(&bytes[..4], b"icns");
    let total = u32::from_be_bytes(bytes[4..8].try_into().unwrap()) as usize;
    assert_eq!(total, bytes.len(), "the header gives the file's length");
    let mut at = 8;
    let mut out = Vec::new();
    while at < total {
        let kind: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        let len = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((kind, bytes[at + 8..at + len].to_vec()));
        at += len;
    }
    out
}

#[test]
fn the_installers_icons_are_the_apps_icon() {
    let dir = icons_dir();
    if std::env::var_os("PINCHAT_WRITE_ICONS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for size in PNG_SIZES {
            std::fs::write(dir.join(format!("pinchat-{size}.png")), encode(size)).unwrap();
        }
        std::fs::write(dir.join("pinchat.ico"), ico()).unwrap();
        std::fs::write(dir.join("pinchat.icns"), icns()).unwrap();
    }
    let stale =
        "run `PINCHAT_WRITE_ICONS=1 cargo test -p pinchat-ui --test installer_icons` after changing the icon";
    for size in PNG_SIZES {
        let path = dir.join(format!("pinchat-{size}.png"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; {stale}", path.display()));
        assert_eq!(
            decode(&bytes),
            (size, app_icon(size)),
            "{}: {stale}",
            path.display()
        );
    }
    let ico = read_ico(&std::fs::read(dir.join("pinchat.ico")).unwrap());
    assert_eq!(ico.iter().map(|(s, _)| *s).collect::<Vec<_>>(), ICO_SIZES);
    for (size, png) in ico {
        assert_eq!(
            decode(&png),
            (size, app_icon(size)),
            "pinchat.ico at {size}: {stale}"
        );
    }
    let icns = read_icns(&std::fs::read(dir.join("pinchat.icns")).unwrap());
    assert_eq!(icns.len(), ICNS_TYPES.len());
    for ((kind, png), (want_kind, size)) in icns.into_iter().zip(ICNS_TYPES) {
        assert_eq!(&kind, want_kind);
        assert_eq!(
            decode(&png),
            (size, app_icon(size)),
            "pinchat.icns {kind:?}: {stale}"
        );
    }
}

#[test]
fn the_icon_is_smooth_and_transparent_around_the_bubble() {
    for size in [16, 64, 512] {
        let img = app_icon(size);
        assert_eq!(img.len(), (size * size * 4) as usize);
        // The corners are outside the bubble, the centre inside.
        assert_eq!(img[3], 0, "top-left corner at {size}");
        let last = img.len() - 1;
        assert_eq!(img[last], 0, "bottom-right corner at {size}");
        // Edges are anti-aliased: some pixels are neither transparent nor opaque.
        let partial = img.chunks(4).filter(|p| p[3] > 0 && p[3] < 255).count();
        assert!(partial > 0, "no smooth edge at {size}");
    }
}
