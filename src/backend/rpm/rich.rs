//! Rich (boolean) dependencies: `(a or (b and c))`, `(a if b else c)`.
use super::Dep;
use rpm::DependencyFlags;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Atom(Dep),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    If(Box<Expr>, Box<Expr>, Option<Box<Expr>>),
    Unless(Box<Expr>, Box<Expr>, Option<Box<Expr>>),
    With(Box<Expr>, Box<Expr>),
    Without(Box<Expr>, Box<Expr>),
}

fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        match c {
            '(' | ')' => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Parse a rich dependency; None when it is malformed.
pub fn parse(text: &str) -> Option<Expr> {
    let tokens = tokens(text);
    let mut pos = 0;
    let expr = parse_expr(&tokens, &mut pos)?;
    (pos == tokens.len()).then_some(expr)
}

fn parse_expr(t: &[String], pos: &mut usize) -> Option<Expr> {
    if t.get(*pos)? == "(" {
        *pos += 1;
        let first = parse_expr(t, pos)?;
        let result = match t.get(*pos)?.as_str() {
            ")" => first,
            op @ ("and" | "or" | "with") => {
                let mut items = vec![first];
                while t.get(*pos).map(String::as_str) == Some(op) {
                    *pos += 1;
                    items.push(parse_expr(t, pos)?);
                }
                match op {
                    "and" => Expr::And(items),
                    "or" => Expr::Or(items),
                    _ => items
                        .into_iter()
                        .reduce(|a, b| Expr::With(Box::new(a), Box::new(b)))?,
                }
            }
            op @ ("if" | "unless") => {
                *pos += 1;
                let cond = parse_expr(t, pos)?;
                let otherwise = if t.get(*pos).map(String::as_str) == Some("else") {
                    *pos += 1;
                    Some(Box::new(parse_expr(t, pos)?))
                } else {
                    None
                };
                if op == "if" {
                    Expr::If(Box::new(first), Box::new(cond), otherwise)
                } else {
                    Expr::Unless(Box::new(first), Box::new(cond), otherwise)
                }
            }
            "without" => {
                *pos += 1;
                Expr::Without(Box::new(first), Box::new(parse_expr(t, pos)?))
            }
            _ => return None,
        };
        if t.get(*pos)? != ")" {
            return None;
        }
        *pos += 1;
        return Some(result);
    }
    // A simple dependency: NAME [OP VERSION].
    let name = t.get(*pos)?.clone();
    if ["and", "or", "if", "unless", "else", "with", "without", ")"].contains(&name.as_str()) {
        return None;
    }
    *pos += 1;
    let flags = match t.get(*pos).map(String::as_str) {
        Some("<") => DependencyFlags::LESS,
        Some("<=") => DependencyFlags::LE,
        Some(">") => DependencyFlags::GREATER,
        Some(">=") => DependencyFlags::GE,
        Some("=") | Some("==") => DependencyFlags::EQUAL,
        _ => {
            return Some(Expr::Atom(Dep {
                name,
                flags: DependencyFlags::ANY,
                version: String::new(),
            }))
        }
    };
    *pos += 1;
    let version = t.get(*pos)?.clone();
    *pos += 1;
    Some(Expr::Atom(Dep {
        name,
        flags,
        version,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rich_dependencies_parse() {
        use Expr::*;
        let e = parse("(foo >= 1.2 or (bar and baz))").unwrap();
        let Or(items) = e else { panic!("{e:?}") };
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[0], Atom(d) if d.name == "foo" && d.version == "1.2"));
        assert!(matches!(&items[1], And(v) if v.len() == 2));
        assert!(matches!(
            parse("(a if b else c)").unwrap(),
            If(_, _, Some(_))
        ));
        assert!(matches!(parse("(a without b)").unwrap(), Without(_, _)));
        assert!(parse("(a or)").is_none());
        assert!(parse("(a or b").is_none());
    }
}
