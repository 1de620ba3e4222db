//! Just enough HTML reading for the probe: the first form of a page (its action and named inputs) and a short
//! text summary of a page for error messages.

/// A form: its absolute action and its named input values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub action: String,
    pub fields: Vec<(String, String)>,
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// The first form of `html`, its action resolved against `base`; inputs without a name are skipped.
pub fn form(base: &str, html: &str) -> Option<Form> {
    let start = html.find("<form")?;
    let end = html[start..].find("</form>").map_or(html.len(), |end| start + end);
    let body = &html[start..end];
    let action = attribute(body.split('>').next()?, "action").unwrap_or_default();
    let action = url::Url::parse(base).ok()?.join(&action).ok()?.to_string();
    let fields = body
        .split('<')
        .filter(|tag| tag.starts_with("input"))
        .filter_map(|tag| Some((attribute(tag, "name")?, attribute(tag, "value").unwrap_or_default())))
        .collect();
    Some(Form { action, fields })
}

/// The value of the input named `name`, anywhere in the page.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\"");
    html.split('<')
        .filter(|tag| tag.starts_with("input") && tag.contains(&needle))
        .find_map(|tag| attribute(tag, "value"))
}

/// The page's text without tags, collapsed and cut to 160 characters.
pub fn summary(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for character in html.chars() {
        match character {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            _ if !in_tag => text.push(character),
            _ => {}
        }
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    words.join(" ").chars().take(160).collect()
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_form() {
        let html = r#"<p>Sign in</p><form method="post" action="/login" class="stack">
            <input type="hidden" name="csrf" value="a&amp;b"><input name="pending" type="hidden" value="p1">
            <input id="username" name="username" type="text" value="" required><input type="submit">
            </form><form action="/other"><input name="x" value="y"></form>"#;
        let form = form("https://idp.example/authorize?x=1", html).unwrap();
        assert_eq!(form.action, "https://idp.example/login");
        assert_eq!(
            form.fields,
            vec![("csrf".into(), "a&b".into()), ("pending".into(), "p1".into()), ("username".into(), String::new())]
        );
        assert_eq!(input_value(html, "pending").as_deref(), Some("p1"));
        assert_eq!(summary(html).split(' ').next(), Some("Sign"));
        assert!(super::form("https://idp.example/", "<p>no form</p>").is_none());
    }
}
