//! Plain-text tables for `--output table`: one column per field, aligned, values shortened to one line.

use serde_json::Value;

/// A cell's text: strings as they are, arrays joined with commas, null as `-`, other values as JSON.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) if items.is_empty() => "-".into(),
        Some(Value::Array(items)) => items.iter().map(|item| cell(Some(item))).collect::<Vec<_>>().join(","),
        Some(other) => other.to_string(),
    }
}

/// Renders `rows` (JSON objects) under `columns` (field names, upper-cased as headers), padded to the widest cell.
pub fn render(columns: &[&str], rows: &[Value]) -> String {
    let mut grid: Vec<Vec<String>> = vec![columns.iter().map(|column| column.to_uppercase()).collect()];
    for row in rows {
        grid.push(columns.iter().map(|column| cell(row.get(*column)).replace('\n', " ")).collect());
    }
    let widths: Vec<usize> = (0..columns.len())
        .map(|index| grid.iter().map(|line| line[index].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in grid {
        let cells: Vec<String> =
            line.iter().zip(&widths).map(|(text, width)| format!("{text:<width$}", width = *width)).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One object as `FIELD  value` lines, in the object's order.
pub fn render_object(object: &Value) -> String {
    let Some(fields) = object.as_object() else {
        return format!("{object}\n");
    };
    let width = fields.keys().map(|key| key.chars().count()).max().unwrap_or(0);
    fields.iter().map(|(key, value)| format!("{key:<width$}  {}\n", cell(Some(value)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_flatten_values() {
        let rows = [
            json!({"client_id": "demo", "redirect_uris": ["https://a/cb", "https://b/cb"], "first_party": true}),
            json!({"client_id": "a-longer-id", "redirect_uris": [], "first_party": false, "extra": 1}),
        ];
        let text = render(&["client_id", "first_party", "redirect_uris", "name"], &rows);
        assert_eq!(
            text,
            "CLIENT_ID    FIRST_PARTY  REDIRECT_URIS              NAME\n\
             demo         true         https://a/cb,https://b/cb  -\n\
             a-longer-id  false        -                          -\n"
        );
    }

    #[test]
    fn objects_render_as_field_lines() {
        let text = render_object(&json!({"disabled": false, "email": null, "id": "u1"}));
        assert_eq!(text, "disabled  false\nemail     -\nid        u1\n");
    }
}
