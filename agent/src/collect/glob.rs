//! Shell-style glob on a single file name, for directory listings: `*` (any run of characters),
//! `?` (one character), `[abc]`, `[a-z]` and `[!abc]` / `[^abc]`. No `/` handling and no `**`:
//! it matches names, not paths. Matching is O(name × pattern) at worst, never exponential.

use cordon_protocol::message::{TaskError, TaskErrorCode};

use super::task_error;

/// Longest pattern accepted.
const MAX_GLOB_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Star,
    AnyOne,
    Literal(char),
    /// Inclusive ranges; a single character is a range of one.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    /// Compiles `pattern`; an unclosed `[` or an over-long pattern → `InvalidInput`.
    pub fn new(pattern: &str) -> Result<Self, TaskError> {
        let invalid = |why: &str| {
            task_error(
                TaskErrorCode::InvalidInput,
                format!(
                    "glob {:?}: {why}",
                    pattern.chars().take(64).collect::<String>()
                ),
            )
        };
        if pattern.len() > MAX_GLOB_LEN {
            return Err(invalid(&format!("longer than {MAX_GLOB_LEN} bytes")));
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                // Consecutive stars mean the same as one.
                '*' if tokens.last() == Some(&Token::Star) => {}
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::AnyOne),
                '[' => {
                    let (token, next) = parse_class(&chars, i + 1)
                        .ok_or_else(|| invalid("`[` without a closing `]`"))?;
                    tokens.push(token);
                    i = next;
                    continue;
                }
                c => tokens.push(Token::Literal(c)),
            }
            i += 1;
        }
        Ok(Self { tokens })
    }

    /// Whether the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let (mut t, mut n) = (0, 0);
        // Where to resume after the last star: (token after it, name position it absorbed to).
        let mut backtrack: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.tokens.get(t) {
                Some(Token::Star) => {
                    backtrack = Some((t + 1, n));
                    t += 1;
                    continue;
                }
                Some(tok) if single_matches(tok, name[n]) => {
                    t += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
            // Mismatch: let the last star absorb one more character, or fail.
            match backtrack {
                Some((bt, bn)) => {
                    backtrack = Some((bt, bn + 1));
                    t = bt;
                    n = bn + 1;
                }
                None => return false,
            }
        }
        self.tokens[t..].iter().all(|tok| *tok == Token::Star)
    }
}

fn single_matches(token: &Token, c: char) -> bool {
    match token {
        Token::Star => false,
        Token::AnyOne => true,
        Token::Literal(l) => *l == c,
        Token::Class { negated, ranges } => {
            ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
        }
    }
}

/// Parses a class whose body starts at `start` (just after `[`); returns it and the index after
/// its `]`. As in the shell, a `]` first in the class is a literal.
fn parse_class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start;
    let negated = matches!(chars.get(i), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let body_start = i;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && i > body_start {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        match (chars.get(i + 1), chars.get(i + 2)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                ranges.push((c, hi));
                i += 3;
            }
            _ => {
                ranges.push((c, c));
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        Glob::new(pattern).unwrap().matches(name)
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(m("*.so", "libc.so"));
        assert!(m("*.so", ".so"));
        assert!(!m("*.so", "libc.so.6"));
        assert!(m("*.so*", "libc.so.6"));
        assert!(m("lib?.so", "libc.so"));
        assert!(!m("lib?.so", "lib.so"));
        assert!(m("*", ""));
        assert!(!m("?", ""));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("**x", "abx"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
    }

    #[test]
    fn classes_ranges_and_negation() {
        assert!(m("[abc].txt", "b.txt"));
        assert!(!m("[abc].txt", "d.txt"));
        assert!(m("log.[0-9]", "log.7"));
        assert!(!m("log.[0-9]", "log.x"));
        assert!(m("[!.]*", "visible"));
        assert!(!m("[!.]*", ".hidden"));
        assert!(m("[^a]", "b"));
        assert!(m("[]]", "]"));
        assert!(m("[a-]", "-"));
    }

    #[test]
    fn bad_patterns_are_refused_by_name() {
        let err = Glob::new("[abc").unwrap_err();
        assert_eq!(err.code, TaskErrorCode::InvalidInput);
        assert!(err.message.contains("[abc"), "{}", err.message);
        assert!(Glob::new(&"*".repeat(2000)).is_err());
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let g = Glob::new(&"*a".repeat(50)).unwrap();
        let name = "a".repeat(49) + "b";
        let started = std::time::Instant::now();
        assert!(!g.matches(&name));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
