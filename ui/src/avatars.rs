//! Pinned contacts' avatars as files, for OS notifications (which take an image by path): fetched
//! through the daemon (`widget.avatar`) when a contact is pinned or its avatar changes, so that a
//! message's notification never waits for one. Kept in the user's cache directory, one file per image
//! hash; a hash that is not a plain token (a hostile server's) is never used as a file name.

use std::path::{Path, PathBuf};

/// The folder of avatar files.
#[derive(Debug, Clone)]
pub struct Avatars {
    dir: PathBuf,
}

/// The file extensions written, by MIME type; anything else is not an image a notification shows.
const TYPES: &[(&str, &str)] = &[
    ("image/png", "png"),
    ("image/jpeg", "jpg"),
    ("image/gif", "gif"),
    ("image/webp", "webp"),
];

impl Avatars {
    /// In the platform's cache directory (`~/.cache/pinchat/avatars` on Linux).
    pub fn in_cache() -> Option<Avatars> {
        directories::ProjectDirs::from("", "", "pinchat").map(|d| Avatars::at(d.cache_dir().join("avatars")))
    }

    pub fn at(dir: PathBuf) -> Avatars {
        Avatars { dir }
    }

    /// The file of the image `hash`, if it has been fetched.
    pub fn cached(&self, hash: &str) -> Option<PathBuf> {
        if !plain(hash) {
            return None;
        }
        TYPES
            .iter()
            .map(|(_, ext)| self.dir.join(format!("{hash}.{ext}")))
            .find(|p| p.is_file())
    }

    /// Stores the image `hash` (`data` of type `mime`); its path. Written whole or not at all.
    pub fn store(&self, hash: &str, mime: &str, data: &[u8]) -> std::io::Result<PathBuf> {
        let ext = TYPES
            .iter()
            .find(|(m, _)| *m == mime)
            .map(|(_, e)| *e)
            .filter(|_| plain(hash))
            .ok_or_else(|| std::io::Error::other(format!("not an avatar to keep: {mime}")))?;
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{hash}.{ext}"));
        let tmp = self.dir.join(format!(".{hash}.{ext}.tmp"));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The picture in `path` as `size`×`size` RGBA (cropped to a square, then scaled), for a contact's own
/// tray icon; `None` when it cannot be read or decoded. The cache holds what the daemon served (at most
/// its avatar size limit), and decoding is bounded all the same.
pub fn face(path: &Path, size: u32) -> Option<Vec<u8>> {
    let mut reader = image::ImageReader::open(path).ok()?.with_guessed_format().ok()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(4096);
    limits.max_image_height = Some(4096);
    limits.max_alloc = Some(64 * 1024 * 1024);
    reader.limits(limits);
    let img = reader.decode().ok()?;
    let side = img.width().min(img.height());
    let square = img.crop_imm((img.width() - side) / 2, (img.height() - side) / 2, side, side);
    Some(
        square
            .resize_exact(size, size, image::imageops::FilterType::Triangle)
            .to_rgba8()
            .into_raw(),
    )
}

/// A hash fit for a file name: 1–128 ASCII letters, digits, `-` or `_`.
fn plain(hash: &str) -> bool {
    (1..=128).contains(&hash.len())
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avatars_are_kept_by_hash_and_hostile_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Avatars::at(dir.path().join("avatars"));
        assert_eq!(a.cached("abc123"), None);
        let path = a.store("abc123", "image/png", b"\x89PNG").unwrap();
        assert_eq!(path, dir.path().join("avatars/abc123.png"));
        assert_eq!(a.cached("abc123"), Some(path));
        for hostile in ["../../etc/passwd", "a/b", "", ".hidden", &"x".repeat(129)] {
            assert!(a.store(hostile, "image/png", b"x").is_err(), "{hostile:?}");
            assert_eq!(a.cached(hostile), None);
        }
        assert!(a.store("svg1", "image/svg+xml", b"<svg/>").is_err());
        // Not a picture: no face, no panic.
        assert_eq!(face(&a.cached("abc123").unwrap(), 64), None);
        assert_eq!(std::fs::read_dir(a.dir()).unwrap().count(), 1);
    }
}
