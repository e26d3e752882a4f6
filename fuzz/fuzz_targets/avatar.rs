//! Avatar uploads: the type sniffed from the first bytes, then the whole image decoded within bounds.
//! Any bytes are accepted as a whole image of at most 2048×2048 pixels, or refused with words — never a
//! panic out of `check_image`, never an allocation beyond the decoder's limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinchat_server::http::{check_image, sniff_image};

fuzz_target!(
    init: {
        // libFuzzer counts every panic as a crash, even one that is caught. `check_image` catches the
        // panics of the JPEG decoder (zune-jpeg's upsampler asserts on some hostile files — found here,
        // a known class of its bugs) and refuses the image: those are not crashes of pinchat. Any other
        // panic still is.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| l.file().contains("/zune-jpeg-")) {
                return;
            }
            default(info);
        }));
    },
    |data: &[u8]| {
        if let Some(mime) = sniff_image(data) {
            let _ = check_image(data, mime);
        }
    }
);
