//! The strings of a task's driver configuration as Nomad reads them: HCL2 templates, into which
//! text is escaped once and task environment variables are interpolated.

/// A piece of one string of a task's driver configuration: text to pass through as is, or a task
/// environment variable for Nomad to interpolate when the task starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Literal text.
    Text(&'a str),
    /// `${NAME}`: the task environment's `NAME` (a name [`is_interpolable`] accepts).
    Var(&'a str),
}

/// One string of a task's driver configuration, written for Nomad, which reads every such string
/// as an HCL2 template when the task starts (`hclutils.ParseHclInterface`: JSON syntax, whose
/// strings are templates). The text is joined first and escaped once, so escapes cannot be split
/// across pieces: `${` becomes `$${` and `%{` becomes `%%{` (HCL's template escapes), and a run of
/// `$` right before a variable, which HCL would read as the escape `$${`, is written as the
/// template expression `${"$$"}`. For any pieces, HCL evaluates the result to the text with each
/// variable's value in its place (property-tested against `hcl-rs`, and end to end on Nomad).
pub fn hcl_template(pieces: &[Piece<'_>]) -> String {
    fn escape(out: &mut String, text: &str) {
        out.push_str(&text.replace("${", "$${").replace("%{", "%%{"));
    }
    let mut out = String::new();
    let mut text = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => text.push_str(t),
            Piece::Var(name) => {
                let kept = text.trim_end_matches('$');
                escape(&mut out, kept);
                let dollars = text.len() - kept.len();
                if dollars > 0 {
                    out.push_str(&format!("${{\"{}\"}}", "$".repeat(dollars)));
                }
                out.push_str(&format!("${{{name}}}"));
                text.clear();
            }
        }
    }
    escape(&mut out, &text);
    out
}

/// Plain text for a string of a task's driver configuration: [`hcl_template`] of the text alone.
pub fn hcl_text(s: &str) -> String {
    hcl_template(&[Piece::Text(s)])
}

/// Whether Nomad can interpolate `${name}` for this variable name.
pub(super) fn is_interpolable(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
