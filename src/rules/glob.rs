//! Glob patterns for units and locations: `*` (any run), `?` (one character),
//! `[abc]`, `[a-z]`, `[!abc]` (classes), `\x` (a literal). Matching ignores
//! ASCII case: unit codes arrive as `ICU`, `icu` or `Icu` depending on the feed.

/// A compiled glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    tokens: Vec<Token>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    One,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    /// Compiles `pattern`; the error says what is wrong with it.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty pattern (use \"*\" for any)".to_string());
        }
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::One),
                '\\' => match chars.next() {
                    Some(l) => tokens.push(Token::Literal(l.to_ascii_lowercase())),
                    None => return Err("ends with a lone `\\`".to_string()),
                },
                '[' => {
                    let negated = chars.peek() == Some(&'!');
                    if negated {
                        chars.next();
                    }
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    while let Some(c) = chars.next() {
                        if c == ']' {
                            closed = true;
                            break;
                        }
                        let lo = c.to_ascii_lowercase();
                        if chars.peek() == Some(&'-') {
                            chars.next();
                            match chars.next() {
                                Some(']') | None => {
                                    return Err(format!("range `{c}-` has no end"));
                                }
                                Some(hi) => {
                                    let hi = hi.to_ascii_lowercase();
                                    if hi < lo {
                                        return Err(format!("range `{c}-{hi}` is reversed"));
                                    }
                                    ranges.push((lo, hi));
                                }
                            }
                        } else {
                            ranges.push((lo, lo));
                        }
                    }
                    if !closed {
                        return Err("`[` is never closed with `]`".to_string());
                    }
                    if ranges.is_empty() {
                        return Err("empty character class `[]`".to_string());
                    }
                    tokens.push(Token::Class { negated, ranges });
                }
                ']' => return Err("`]` without `[`".to_string()),
                c => tokens.push(Token::Literal(c.to_ascii_lowercase())),
            }
        }
        Ok(Glob {
            pattern: pattern.to_string(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// True when the whole of `text` matches (ASCII case ignored).
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().map(|c| c.to_ascii_lowercase()).collect();
        let (mut t, mut p) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.tokens.get(p) {
                Some(Token::Star) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(tok) if single(tok, text[t]) => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        self.tokens[p..].iter().all(|t| *t == Token::Star)
    }
}

fn single(tok: &Token, c: char) -> bool {
    match tok {
        Token::Literal(l) => *l == c,
        Token::One => true,
        Token::Class { negated, ranges } => {
            ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated
        }
        Token::Star => false,
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn m(p: &str, t: &str) -> bool {
        Glob::new(p).expect("glob").matches(t)
    }

    #[test]
    fn matches_like_a_shell() {
        assert!(m("ICU*", "ICU"));
        assert!(m("ICU*", "icu-north"));
        assert!(!m("ICU*", "MICU"));
        assert!(m("*ICU", "MICU"));
        assert!(m("4?", "4W"));
        assert!(!m("4?", "4"));
        assert!(m("[45]W", "5w"));
        assert!(!m("[!45]W", "5W"));
        assert!(m("[a-c]*", "B2"));
        assert!(m("ICU/1*/?", "ICU/12/A"));
        assert!(m("a\\*", "a*"));
        assert!(!m("a\\*", "ab"));
        assert!(m("*", ""));
        assert!(m("*a*b*", "xxaxxbxx"));
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(Glob::new("").unwrap_err().contains("empty"));
        assert!(Glob::new("ICU[").unwrap_err().contains("never closed"));
        assert!(
            Glob::new("[]")
                .unwrap_err()
                .contains("empty character class")
        );
        assert!(Glob::new("[z-a]").unwrap_err().contains("reversed"));
        assert!(Glob::new("a\\").unwrap_err().contains("lone"));
        assert!(Glob::new("a]").unwrap_err().contains("without"));
    }
}
