//! Source positions for annotations, in Prometheus's `(line:column)` form.
//! The parser's AST carries no positions, so they are found in the query text.

fn line_col(q: &str, byte: usize) -> String {
    let before = &q[..byte.min(q.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    format!("({line}:{col})")
}

/// Byte offset of the first call `name(` that is not part of a longer identifier.
fn find_call(q: &str, name: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = q[from..].find(name) {
        let at = from + i;
        let before_ok = at == 0
            || !q[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        let rest = q[at + name.len()..].trim_start();
        if before_ok && rest.starts_with('(') {
            return Some(at);
        }
        from = at + name.len();
    }
    None
}

/// Position of the call to `name` itself.
pub fn call_position(q: &str, name: &str) -> String {
    line_col(q, find_call(q, name).unwrap_or(0))
}

/// Position of argument `arg` (0-based) of the first call to `name`.
pub fn arg_position(q: &str, name: &str, arg: usize) -> String {
    let Some(at) = find_call(q, name) else {
        return line_col(q, 0);
    };
    let open = at + q[at..].find('(').unwrap_or(0) + 1;
    let bytes = q.as_bytes();
    let mut depth = 0i32;
    let mut n = 0usize;
    let mut i = open;
    let mut quote: Option<u8> = None;
    let skip_ws = |mut j: usize| {
        while j < bytes.len() && (bytes[j] as char).is_whitespace() {
            j += 1;
        }
        j
    };
    if arg == 0 {
        return line_col(q, skip_ws(open));
    }
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(qc) = quote {
            if c == b'\\' {
                i += 1;
            } else if c == qc {
                quote = None;
            }
        } else {
            match c {
                b'"' | b'\'' | b'`' => quote = Some(c),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                }
                b',' if depth == 0 => {
                    n += 1;
                    if n == arg {
                        return line_col(q, skip_ws(i + 1));
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    line_col(q, open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_columns() {
        assert_eq!(call_position("sort(x)", "sort"), "(1:1)");
        assert_eq!(arg_position("rate(metric[5m])", "rate", 0), "(1:6)");
        assert_eq!(
            arg_position("histogram_quantile(0.5, sum(x))", "histogram_quantile", 1),
            "(1:25)"
        );
        assert_eq!(arg_position("sum(sort_desc(x))", "sort", 0), "(1:1)");
    }
}
