use std::fmt;

use regex::Regex;

/// How a matcher compares a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// A bad matcher: its regex did not compile.
#[derive(Debug, thiserror::Error)]
#[error("invalid regular expression {pattern:?} for label {label:?}: {reason}")]
pub struct MatcherError {
    pub label: String,
    pub pattern: String,
    pub reason: String,
}

/// A label matcher with Prometheus semantics: regexes are fully anchored, and a
/// missing label matches as the empty string.
#[derive(Debug, Clone)]
pub struct Matcher {
    name: String,
    op: MatchOp,
    value: String,
    re: Option<Regex>,
}

impl Matcher {
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Self, MatcherError> {
        let name = name.into();
        let value = value.into();
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(compile_anchored(&value).map_err(|reason| MatcherError {
                label: name.clone(),
                pattern: value.clone(),
                reason,
            })?),
            _ => None,
        };
        Ok(Matcher { name, op, value, re })
    }

    /// `name="value"`, which cannot fail.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            re: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn op(&self) -> MatchOp {
        self.op
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether a label value (`""` when the label is absent) satisfies the matcher.
    pub fn matches(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => self.value == v,
            MatchOp::NotEqual => self.value != v,
            MatchOp::Regex => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    /// Whether the matcher accepts the empty string, i.e. series without the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// For `=~` with a pure alternation of literals (`a|b|c`), the literals; lets a
    /// store look postings up directly instead of scanning every value.
    pub fn set_values(&self) -> Option<Vec<String>> {
        if self.op != MatchOp::Regex {
            return None;
        }
        let mut out = Vec::new();
        for part in self.value.split('|') {
            if part.is_empty()
                || part
                    .chars()
                    .any(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ':' || c == '/'))
            {
                return None;
            }
            out.push(part.to_string());
        }
        Some(out)
    }
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.op == o.op && self.value == o.value
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        };
        write!(f, "{}{}{:?}", self.name, op, self.value)
    }
}

/// Compiles a Prometheus (RE2) regex anchored at both ends. Go accepts a `{`
/// that does not start a repetition as a literal; Rust's regex does not, so
/// such braces are escaped before a second attempt.
fn compile_anchored(pattern: &str) -> Result<Regex, String> {
    let anchored = format!("^(?s:{pattern})$");
    match Regex::new(&anchored) {
        Ok(r) => Ok(r),
        Err(first) => Regex::new(&format!("^(?s:{})$", escape_literal_braces(pattern))).map_err(|_| first.to_string()),
    }
}

fn escape_literal_braces(p: &str) -> String {
    let chars: Vec<char> = p.chars().collect();
    let mut out = String::with_capacity(p.len() + 4);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if i + 1 < chars.len() => {
                out.push(c);
                out.push(chars[i + 1]);
                i += 2;
            }
            '{' => {
                // A repetition is `{n}`, `{n,}` or `{n,m}`: copy it as it is.
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == ',') {
                    j += 1;
                }
                let body: String = chars[i + 1..j].iter().collect();
                let is_rep = j < chars.len()
                    && chars[j] == '}'
                    && !body.is_empty()
                    && !body.starts_with(',')
                    && body.matches(',').count() <= 1;
                if is_rep {
                    out.extend(&chars[i..=j]);
                    i = j + 1;
                } else {
                    out.push_str("\\{");
                    i += 1;
                }
            }
            '}' => {
                out.push_str("\\}");
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(op: MatchOp, v: &str) -> Matcher {
        Matcher::new(op, "l", v).expect("valid matcher")
    }

    #[test]
    fn regex_is_fully_anchored() {
        assert!(m(MatchOp::Regex, "foo").matches("foo"));
        assert!(!m(MatchOp::Regex, "foo").matches("foobar"));
        assert!(!m(MatchOp::Regex, "foo").matches("xfoo"));
        assert!(m(MatchOp::Regex, "foo|bar").matches("bar"));
        assert!(m(MatchOp::NotRegex, "foo").matches("foobar"));
        assert!(m(MatchOp::Regex, ".*").matches(""));
        assert!(m(MatchOp::Regex, "a.b").matches("a\nb"));
    }

    #[test]
    fn literal_braces_are_accepted_like_go() {
        assert!(m(MatchOp::Regex, "a{b}c").matches("a{b}c"));
        assert!(m(MatchOp::Regex, "a{2}").matches("aa"));
    }

    #[test]
    fn invalid_regex_names_label_and_pattern() {
        let e = Matcher::new(MatchOp::Regex, "job", "(").expect_err("must fail");
        let s = e.to_string();
        assert!(s.contains("job") && s.contains("\"(\""), "{s}");
    }

    #[test]
    fn set_values_only_for_literal_alternations() {
        assert_eq!(
            m(MatchOp::Regex, "a|b").set_values(),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(m(MatchOp::Regex, "a.*").set_values(), None);
        assert_eq!(m(MatchOp::NotRegex, "a").set_values(), None);
    }
}
