//! The bundled font, registered once per process as plotters' `sans-serif`.

use std::sync::OnceLock;

use plotters::style::FontStyle;

/// DejaVu Sans 2.37 (Bitstream Vera licence with DejaVu changes in the public domain; see
/// `fonts/DejaVuSans-LICENSE.txt`).
static DEJAVU_SANS: &[u8] = include_bytes!("../../fonts/DejaVuSans.ttf");

/// The family name figures use.
pub const SANS: &str = "sans-serif";

/// Registers the bundled font (idempotent).
pub fn ensure() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The bytes are a valid TrueType font (checked by the tests): registration
            // cannot fail for them.
            let _ = plotters::style::register_font(SANS, style, DEJAVU_SANS);
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bundled_font_is_a_valid_truetype_font() {
        assert!(
            plotters::style::register_font("test-sans", plotters::style::FontStyle::Normal, super::DEJAVU_SANS).is_ok()
        );
    }
}
