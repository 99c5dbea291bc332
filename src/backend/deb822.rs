//! deb822, the text format of dpkg's `status` file and of a `.deb`'s
//! `control`: stanzas of `Field: value` lines separated by blank lines,
//! continuation lines starting with a space or tab.  Shared by the dpkg
//! database reader and the `.deb` reader, which otherwise know nothing of
//! each other.

/// Split a deb822 file into stanzas of `(field, value)`; continuation lines
/// are joined with `\n`.
pub fn stanzas(text: &str) -> Vec<Vec<(&str, String)>> {
    numbered_stanzas(text).into_iter().map(|(_, s)| s).collect()
}

/// [`stanzas`], each with the line number (from 1) where it starts.
pub fn numbered_stanzas(text: &str) -> Vec<(usize, Vec<(&str, String)>)> {
    let mut out = Vec::new();
    let mut cur: Vec<(&str, String)> = Vec::new();
    let mut start = 1;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push((start, std::mem::take(&mut cur)));
            }
        } else if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, v)) = cur.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            if cur.is_empty() {
                start = n + 1;
            }
            cur.push((k.trim(), v.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        out.push((start, cur));
    }
    out
}

/// The value of field `name` (case-insensitive) in `stanza`.
pub fn field<'a>(stanza: &'a [(&str, String)], name: &str) -> Option<&'a str> {
    stanza
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas_join_continuation_lines() {
        let text = "Package: a\nConffiles:\n /etc/a 123\n /etc/b 456 obsolete\n\nPackage: b\n";
        let s = stanzas(text);
        assert_eq!(s.len(), 2);
        assert_eq!(
            field(&s[0], "conffiles"),
            Some("\n/etc/a 123\n/etc/b 456 obsolete")
        );
    }
}
