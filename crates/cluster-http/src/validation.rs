//! The details of a request body that failed its validation, as isp-kit writes them.
//!
//! isp-kit validates with go-playground's validator and its English translations, and names
//! each failing field by its path with the first letter of each segment lower-cased
//! (`name`, `items[0].count`, `someStruct.optional.a`); the message names the field as Go
//! spells it (`Name is a required field`). [`details`] does the same from the `validator`
//! crate's errors:
//!
//! - **Keys**: each field's Rust name in lower camel case (`user_id` → `userId`, `r#type` →
//!   `type`), nested structs joined with `.`, list elements as `[i]` (a map's values are
//!   numbered in iteration order, as the `validator` crate reports them; Go writes `[key]`).
//!   A list validated at the top is `[1].count`, as in Go. Struct-level errors
//!   (`#[validate(schema(…))]`) are under `__all__`.
//! - **Messages**: an error with a `message` (`#[validate(length(min = 1, message = "…"))]`
//!   or a custom validator's) is written as it is; otherwise the English text go-playground
//!   gives the matching tag, with the field's Go name (upper camel case: `user_id` →
//!   `UserId`):
//!
//! | `validator` | go-playground tag | message |
//! |---|---|---|
//! | `required` | `required` | `Name is a required field` |
//! | `length(equal = n)` | `len` | `Name must be 5 characters in length` / `Items must contain 2 items` |
//! | `length(min = n)` failed | `min` | `Name must be at least 1 character in length` / `Items must contain at least 1 item` |
//! | `length(max = n)` failed | `max` | `Name must be a maximum of 10 characters in length` / `Items must contain at maximum 1 item` |
//! | `range(min = n)` failed | `min` / `gte` | `Age must be 18 or greater` |
//! | `range(max = n)` failed | `max` / `lte` | `Age must be 1,000 or less` |
//! | `range(exclusive_min = n)` failed | `gt` | `Age must be greater than 0` |
//! | `range(exclusive_max = n)` failed | `lt` | `Age must be less than 100` |
//! | `email` | `email` | `Mail must be a valid email address` |
//! | `url` | `url` | `Site must be a valid URL` |
//! | `ip`, `ip(v4)`, `ip(v6)` | `ip` | `Addr must be a valid IP address` |
//! | `contains(pattern = p)` | `contains` | `Name must contain the text 'p'` |
//! | `does_not_contain(pattern = p)` | `excludes` | `Name cannot contain the text 'p'` |
//! | `must_match(other = f)` | `eqfield` | `Confirm must be equal to the field it must match` (the `validator` crate does not say which) |
//! | anything else (`regex`, `credit_card`, `non_control_character`, a custom code) | a tag without a translation | Go's untranslated text: `Key: 'wrapper.V.Name' Error:Field validation for 'Name' failed on the 'regex' tag` |
//!
//! Numbers are written as go-playground's English locale writes them (`1,000`), with
//! `character`/`item` singular for 1. A string's length is counted in characters, as Go
//! counts runes. Only the first failing rule of a field is reported, as go-playground stops
//! at the first failing tag.

use serde_json::{Map, Value};
use validator::{ValidationError, ValidationErrors, ValidationErrorsKind};

/// The details of `errors`: one entry per failing field (see the [module docs](self)).
///
/// ```
/// use validator::Validate;
///
/// #[derive(Validate)]
/// struct Order {
///     #[validate(required)]
///     order_id: Option<i64>,
///     #[validate(length(min = 1))]
///     items: Vec<String>,
/// }
///
/// let errors = Order { order_id: None, items: vec![] }.validate().unwrap_err();
/// let details = cluster_http::validation::details(&errors);
/// assert_eq!(details["orderId"], "OrderId is a required field");
/// assert_eq!(details["items"], "Items must contain at least 1 item");
/// ```
#[must_use]
pub fn details(errors: &ValidationErrors) -> Map<String, Value> {
    let mut out = Map::new();
    walk(errors, &Path::default(), &mut out);
    out
}

/// Where a field is: the key isp-kit gives it, and Go's namespace of it.
#[derive(Debug, Default, Clone)]
struct Path {
    key: String,
    go: String,
}

impl Path {
    fn field(&self, name: &str) -> Self {
        let (key, go) = if name == LIST {
            (String::new(), String::new())
        } else {
            (camel(name, false), camel(name, true))
        };
        Self {
            key: join(&self.key, &key),
            go: join(&self.go, &go),
        }
    }

    fn index(&self, i: usize) -> Self {
        Self {
            key: format!("{}[{i}]", self.key),
            go: format!("{}[{i}]", self.go),
        }
    }
}

/// The name the `validator` crate gives a list validated on its own.
const LIST: &str = "_tmp_validator";

fn join(prefix: &str, name: &str) -> String {
    match (prefix.is_empty(), name.is_empty()) {
        (true, _) => name.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) => format!("{prefix}.{name}"),
    }
}

fn walk(errors: &ValidationErrors, at: &Path, out: &mut Map<String, Value>) {
    for (name, kind) in errors.errors() {
        let path = at.field(name);
        match kind {
            ValidationErrorsKind::Field(list) => {
                if let Some(first) = list.first() {
                    let field = camel(name, true);
                    let message = message(first, &field, &path.go);
                    out.insert(path.key, Value::String(message));
                }
            }
            ValidationErrorsKind::Struct(inner) => walk(inner, &path, out),
            ValidationErrorsKind::List(items) => {
                for (i, inner) in items {
                    walk(inner, &path.index(*i), out);
                }
            }
        }
    }
}

/// A Rust field name as Go spells it: `user_id` → `UserId` (`upper`) or `userId`. Names
/// starting with `_` (`__all__`) are kept as they are; `r#` is dropped.
fn camel(name: &str, upper: bool) -> String {
    let name = name.strip_prefix("r#").unwrap_or(name);
    if name.starts_with('_') {
        return name.to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for (i, part) in name.split('_').filter(|p| !p.is_empty()).enumerate() {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            if i == 0 && !upper {
                out.extend(first.to_lowercase());
            } else {
                out.extend(first.to_uppercase());
            }
            out.push_str(chars.as_str());
        }
    }
    out
}

/// The message of one failing rule of `field` (Go's name), at Go's namespace `go_path`.
fn message(error: &ValidationError, field: &str, go_path: &str) -> String {
    if let Some(message) = &error.message {
        return message.clone().into_owned();
    }
    let param = |name: &str| error.params.get(name);
    match &*error.code {
        "required" => format!("{field} is a required field"),
        "length" => length(error, field).unwrap_or_else(|| untranslated(error, field, go_path)),
        "range" => range(error, field).unwrap_or_else(|| untranslated(error, field, go_path)),
        "email" => format!("{field} must be a valid email address"),
        "url" => format!("{field} must be a valid URL"),
        "ip" => format!("{field} must be a valid IP address"),
        "contains" => format!("{field} must contain the text '{}'", text(param("needle"))),
        "does_not_contain" => {
            format!(
                "{field} cannot contain the text '{}'",
                text(param("needle"))
            )
        }
        "must_match" => format!("{field} must be equal to the field it must match"),
        _ => untranslated(error, field, go_path),
    }
}

/// go-playground's text for a tag it has no translation of.
fn untranslated(error: &ValidationError, field: &str, go_path: &str) -> String {
    let separator = if go_path.starts_with('[') { "" } else { "." };
    format!(
        "Key: 'wrapper.V{separator}{go_path}' Error:Field validation for '{field}' failed on the '{}' tag",
        error.code
    )
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// `len`, `min` or `max` of a string (in characters) or of a list or map (in items).
fn length(error: &ValidationError, field: &str) -> Option<String> {
    let (actual, strings) = match error.params.get("value") {
        Some(Value::String(s)) => (Some(s.chars().count() as f64), true),
        Some(Value::Array(a)) => (Some(a.len() as f64), false),
        Some(Value::Object(o)) => (Some(o.len() as f64), false),
        _ => (None, true),
    };
    let bound = |name: &str| error.params.get(name).filter(|v| v.is_number());
    let count = |n: &Value| {
        let unit = if strings { "character" } else { "item" };
        let plural = if is_one(n) { "" } else { "s" };
        format!("{} {unit}{plural}", number(n))
    };
    if let Some(equal) = bound("equal") {
        return Some(if strings {
            format!("{field} must be {} in length", count(equal))
        } else {
            format!("{field} must contain {}", count(equal))
        });
    }
    let min = bound("min");
    let max = bound("max");
    let below_min = match (min, actual) {
        (Some(min), Some(actual)) => actual < min.as_f64().unwrap_or(0.0),
        (Some(_), None) => max.is_none(),
        (None, _) => false,
    };
    if below_min {
        let min = min?;
        return Some(if strings {
            format!("{field} must be at least {} in length", count(min))
        } else {
            format!("{field} must contain at least {}", count(min))
        });
    }
    let max = max?;
    Some(if strings {
        format!("{field} must be a maximum of {} in length", count(max))
    } else {
        format!("{field} must contain at maximum {}", count(max))
    })
}

/// A bound of `range`: its parameter, whether a value breaks it, its message.
type Bound = (&'static str, fn(f64, f64) -> bool, &'static str);

/// `min`, `max`, `gt` or `lt` of a number: the first bound the value breaks (the first one
/// given when the value is not there).
fn range(error: &ValidationError, field: &str) -> Option<String> {
    let actual = error.params.get("value").and_then(Value::as_f64);
    let bound = |name: &str| {
        let value = error.params.get(name)?;
        Some((value, value.as_f64()?))
    };
    let checks: [Bound; 4] = [
        ("min", |v, b| v < b, "{F} must be {N} or greater"),
        (
            "exclusive_min",
            |v, b| v <= b,
            "{F} must be greater than {N}",
        ),
        ("max", |v, b| v > b, "{F} must be {N} or less"),
        ("exclusive_max", |v, b| v >= b, "{F} must be less than {N}"),
    ];
    let mut first = None;
    for (name, broken, template) in checks {
        let Some((value, bound)) = bound(name) else {
            continue;
        };
        let text = || {
            template
                .replace("{F}", field)
                .replace("{N}", &number(value))
        };
        match actual {
            Some(actual) if broken(actual, bound) => return Some(text()),
            Some(_) => {}
            None => {
                first.get_or_insert_with(text);
            }
        }
    }
    first
}

fn is_one(n: &Value) -> bool {
    n.as_u64() == Some(1) || n.as_i64() == Some(1)
}

/// A number as go-playground's English locale writes it: thousands grouped with `,`.
fn number(n: &Value) -> String {
    let text = match n {
        Value::Number(n) => n.to_string(),
        other => return text(Some(other)),
    };
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    if digits.contains(['e', 'E']) {
        return text;
    }
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(frac) => format!("{sign}{grouped}.{frac}"),
        None => format!("{sign}{grouped}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use validator::Validate;

    #[derive(Validate)]
    struct Sub {
        #[validate(length(min = 1))]
        a: String,
    }

    #[derive(Validate)]
    struct Body {
        #[validate(required)]
        user_id: Option<i64>,
        #[validate(length(min = 2, max = 1000))]
        name: String,
        #[validate(length(equal = 1))]
        code: String,
        #[validate(length(max = 1))]
        list: Vec<i32>,
        #[validate(range(min = 18, max = 1000))]
        age: i32,
        #[validate(range(exclusive_min = 0.5))]
        ratio: f64,
        #[validate(email)]
        mail: String,
        #[validate(url)]
        site: String,
        #[validate(contains(pattern = "x"))]
        with_x: String,
        #[validate(does_not_contain(pattern = "y"))]
        no_y: String,
        #[validate(length(min = 1, message = "give it a name"))]
        custom: String,
        #[validate(nested)]
        nested: Sub,
        #[validate(nested)]
        items: Vec<Sub>,
        #[validate(nested)]
        optional: Option<Sub>,
        #[validate(custom(function = "digits"))]
        r#type: String,
        #[validate(must_match(other = "mail"))]
        confirm: String,
    }

    fn digits(value: &str) -> Result<(), validator::ValidationError> {
        if value.bytes().all(|b| b.is_ascii_digit()) {
            Ok(())
        } else {
            Err(validator::ValidationError::new("digits"))
        }
    }

    #[test]
    fn details_as_isp_kit_writes_them() {
        let body = Body {
            user_id: None,
            name: "a".into(),
            code: "ab".into(),
            list: vec![1, 2],
            age: 1200,
            ratio: 0.5,
            mail: "nope".into(),
            site: "nope".into(),
            with_x: "a".into(),
            no_y: "y".into(),
            custom: String::new(),
            nested: Sub { a: String::new() },
            items: vec![Sub { a: "ok".into() }, Sub { a: String::new() }],
            optional: Some(Sub { a: String::new() }),
            r#type: "x".into(),
            confirm: "other".into(),
        };
        let details = details(&body.validate().unwrap_err());
        let expected = json!({
            "userId": "UserId is a required field",
            "name": "Name must be at least 2 characters in length",
            "code": "Code must be 1 character in length",
            "list": "List must contain at maximum 1 item",
            "age": "Age must be 1,000 or less",
            "ratio": "Ratio must be greater than 0.5",
            "mail": "Mail must be a valid email address",
            "site": "Site must be a valid URL",
            "withX": "WithX must contain the text 'x'",
            "noY": "NoY cannot contain the text 'y'",
            "custom": "give it a name",
            "nested.a": "A must be at least 1 character in length",
            "items[1].a": "A must be at least 1 character in length",
            "optional.a": "A must be at least 1 character in length",
            "type": "Key: 'wrapper.V.Type' Error:Field validation for 'Type' failed on the 'digits' tag",
            "confirm": "Confirm must be equal to the field it must match",
        });
        assert_eq!(Value::Object(details), expected);
    }

    #[test]
    fn a_list_validated_on_its_own_is_indexed_from_the_top() {
        let list = vec![Sub { a: "x".into() }, Sub { a: String::new() }];
        let details = details(&list.validate().unwrap_err());
        assert_eq!(
            Value::Object(details),
            json!({"[1].a": "A must be at least 1 character in length"})
        );
    }

    #[test]
    fn names_and_numbers_as_go_writes_them() {
        assert_eq!(camel("user_id", false), "userId");
        assert_eq!(camel("user_id", true), "UserId");
        assert_eq!(camel("userID", false), "userID");
        assert_eq!(camel("r#type", true), "Type");
        assert_eq!(camel("__all__", true), "__all__");
        assert_eq!(number(&json!(1_234_567)), "1,234,567");
        assert_eq!(number(&json!(-1000)), "-1,000");
        assert_eq!(number(&json!(999)), "999");
        assert_eq!(number(&json!(1234.5)), "1,234.5");
    }
}
