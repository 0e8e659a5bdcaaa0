//! Terminal rendering of a canvas while it denoises: masked positions as shaded blocks, the
//! tokens committed by the latest step highlighted, and a redraw helper that overwrites the
//! previous frame in place with ANSI escapes.
//!
//! Everything returns strings; the caller decides where to write them (the library never prints).

use std::fmt::Write as _;

/// What a masked position looks like.
pub const MASK_GLYPH: char = '░';
const BOLD_GREEN: &str = "\x1b[1;32m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// Renders one canvas row: the prompt (its first `prompt_len` ids) dimmed, MASK as
/// [`MASK_GLYPH`], positions in `fresh` (relative to the generation start, as in
/// [`super::RowStep::committed`]) in bold green, every other token through `text`.
pub fn render_row(
    canvas: &[u32],
    prompt_len: usize,
    mask: u32,
    fresh: &[usize],
    mut text: impl FnMut(u32) -> String,
) -> String {
    let mut out = String::new();
    let prompt_len = prompt_len.min(canvas.len());
    if prompt_len > 0 {
        out.push_str(DIM);
        for &t in &canvas[..prompt_len] {
            out.push_str(&text(t));
        }
        out.push_str(RESET);
    }
    for (i, &t) in canvas[prompt_len..].iter().enumerate() {
        if t == mask {
            out.push(MASK_GLYPH);
        } else if fresh.contains(&i) {
            let _ = write!(out, "{BOLD_GREEN}{}{RESET}", text(t));
        } else {
            out.push_str(&text(t));
        }
    }
    out
}

/// Redraws a block of lines in place: each frame moves the cursor back over the previous one
/// and clears it before writing the new lines.
#[derive(Debug, Default)]
pub struct Redraw {
    /// Terminal lines the previous frame occupied.
    lines: usize,
}

impl Redraw {
    pub fn new() -> Self {
        Redraw::default()
    }

    /// The escape sequence plus text that replaces the previous frame with `lines`. Each line
    /// is cut at its first newline so the line count stays exact.
    pub fn frame(&mut self, lines: &[String]) -> String {
        let mut out = String::new();
        if self.lines > 0 {
            // Cursor to the start of the line `lines` rows up, then clear to the end of screen.
            let _ = write!(out, "\x1b[{}F", self.lines);
        }
        out.push_str("\x1b[J");
        for line in lines {
            out.push_str(line.split('\n').next().unwrap_or(""));
            out.push('\n');
        }
        self.lines = lines.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_masks_prompt_and_fresh_tokens() {
        let text = |t: u32| char::from(b'a' + t as u8).to_string();
        let s = render_row(&[0, 1, 9, 2, 9], 2, 9, &[1], text);
        assert_eq!(s, format!("{DIM}ab{RESET}░{BOLD_GREEN}c{RESET}░"));
        let s = render_row(&[9, 3], 0, 9, &[], text);
        assert_eq!(s, "░d");
    }

    #[test]
    fn redraw_moves_back_over_previous_frame() {
        let mut r = Redraw::new();
        let first = r.frame(&["a".into(), "b\nc".into()]);
        assert_eq!(first, "\x1b[Ja\nb\n");
        let second = r.frame(&["x".into()]);
        assert_eq!(second, "\x1b[2F\x1b[Jx\n");
        let third = r.frame(&[]);
        assert_eq!(third, "\x1b[1F\x1b[J");
    }
}
