//! How answers read for people: aligned tables, times as "3m ago", and `--json` as the server
//! sent it.

use serde::Serialize;

/// A table for people: left-aligned columns, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.clone()));
        out.push('\n');
    }
    out
}

/// A value that may be missing, `-` when it is.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// How long ago a Unix time was, or "never".
pub fn ago(at: Option<i64>) -> String {
    match at {
        None => "never".into(),
        Some(t) => {
            let secs = (jiff::Timestamp::now().as_second() - t).max(0);
            match secs {
                0..60 => format!("{secs}s ago"),
                60..3600 => format!("{}m ago", secs / 60),
                3600..86400 => format!("{}h ago", secs / 3600),
                _ => format!("{}d ago", secs / 86400),
            }
        }
    }
}

/// A unit enum value as it reads on the wire (`install_failed`, `health_checking`).
pub fn wire_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => "-".into(),
    }
}

pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["long".into(), "x".into()],
                vec!["s".into(), "yy".into()],
            ],
        );
        assert_eq!(t, "A     BB\nlong  x\ns     yy\n");
    }

    #[test]
    fn missing_values_and_times_read_plainly() {
        assert_eq!(or_dash(None::<&str>), "-");
        assert_eq!(or_dash(Some(3)), "3");
        assert_eq!(ago(None), "never");
        let now = jiff::Timestamp::now().as_second();
        assert_eq!(ago(Some(now - 120)), "2m ago");
        assert_eq!(
            ago(Some(now + 50)),
            "0s ago",
            "a clock ahead of ours is not the future"
        );
    }
}
