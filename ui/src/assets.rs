//! The panels' files, embedded in the binary: nothing is read from disk or the network at run time.

/// The Content-Security-Policy of every panel page: only its own script and style, images from data
/// URLs, no network at all.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       font-src 'self'; connect-src 'none'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../assets/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "/call.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/call.js"),
    ),
    (
        "/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
];

/// The MIME type and bytes of the file at `path`.
pub fn get(path: &str) -> Option<(&'static str, &'static [u8])> {
    let path = if path == "/" { "/index.html" } else { path };
    FILES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, mime, body)| (*mime, *body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_served_and_nothing_else() {
        assert!(get("/").is_some());
        assert!(get("/app.js").is_some());
        assert!(get("/../Cargo.toml").is_none());
        assert!(get("/etc/passwd").is_none());
        let html = std::str::from_utf8(get("/index.html").unwrap().1).unwrap();
        // No inline script or style: the CSP forbids them.
        assert!(!html.contains("<script>"), "scripts are files, not inline");
        assert!(!html.contains("style="));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
