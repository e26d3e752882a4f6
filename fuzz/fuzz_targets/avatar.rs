//! Avatar uploads: the type sniffed from the first bytes, then the whole image decoded within bounds.
//! Any bytes are accepted as a whole image of at most 2048×2048 pixels, or refused with words — never a
//! panic, never an allocation beyond the decoder's limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinchat_server::http::{check_image, sniff_image};

fuzz_target!(|data: &[u8]| {
    if let Some(mime) = sniff_image(data) {
        let _ = check_image(data, mime);
    }
});
