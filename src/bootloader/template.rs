//! The tiny line-based template language of `bootloader-configs/` (see its README):
//! `{{name}}`, `{{name?}}` (line dropped when empty), `{{#each list}}`…`{{/each}}`,
//! and `{{! comment}}` lines.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};

/// Values for one rendering: scalars, and lists of items for `{{#each}}`.
#[derive(Debug, Default, Clone)]
pub struct Scope {
    /// `{{name}}` values.
    pub vars: BTreeMap<&'static str, String>,
    /// `{{#each name}}` items; each item's values hide the outer ones inside the block.
    pub lists: BTreeMap<&'static str, Vec<BTreeMap<&'static str, String>>>,
}

/// A parsed template.
#[derive(Debug)]
pub struct Template {
    name: &'static str,
    nodes: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    /// A text line (1-based line number for messages).
    Line(usize, String),
    /// A repeated block.
    Each { line: usize, list: String, body: Vec<Node> },
}

impl Template {
    /// Parses `text`; `name` (the file name) appears in every error.
    pub fn parse(name: &'static str, text: &str) -> Result<Template> {
        let mut stack: Vec<(usize, String, Vec<Node>)> = Vec::new();
        let mut nodes = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let trimmed = line.trim();
            if trimmed.starts_with("{{!") {
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix("{{#each ") {
                let list = rest
                    .strip_suffix("}}")
                    .ok_or_else(|| anyhow!("{name}:{n}: `{{{{#each` without `}}}}`"))?
                    .trim();
                stack.push((n, list.to_string(), std::mem::take(&mut nodes)));
                continue;
            }
            if trimmed == "{{/each}}" {
                let (line, list, outer) = stack
                    .pop()
                    .ok_or_else(|| anyhow!("{name}:{n}: `{{{{/each}}}}` without `{{{{#each}}}}`"))?;
                let body = std::mem::replace(&mut nodes, outer);
                nodes.push(Node::Each { line, list, body });
                continue;
            }
            // Check the placeholders now, so a broken template fails in any test that loads it.
            placeholders(line).map_err(|e| anyhow!("{name}:{n}: {e}"))?;
            nodes.push(Node::Line(n, line.to_string()));
        }
        if let Some((line, list, _)) = stack.pop() {
            bail!("{name}:{line}: `{{{{#each {list}}}}}` is never closed by `{{{{/each}}}}`");
        }
        Ok(Template { name, nodes })
    }

    /// Renders with `scope`; every line ends with a newline.
    pub fn render(&self, scope: &Scope) -> Result<String> {
        let mut out = String::new();
        let vars: BTreeMap<&str, &str> = scope.vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.render_nodes(&self.nodes, scope, &vars, &mut out)?;
        Ok(out)
    }

    fn render_nodes(&self, nodes: &[Node], scope: &Scope, vars: &BTreeMap<&str, &str>, out: &mut String) -> Result<()> {
        for node in nodes {
            match node {
                Node::Line(n, line) => {
                    if let Some(text) = self.render_line(*n, line, vars)? {
                        out.push_str(&text);
                        out.push('\n');
                    }
                }
                Node::Each { line, list, body } => {
                    let items = scope
                        .lists
                        .get(list.as_str())
                        .ok_or_else(|| anyhow!("{}:{line}: unknown list {list:?}", self.name))?;
                    for item in items {
                        let mut inner = vars.clone();
                        inner.extend(item.iter().map(|(k, v)| (*k, v.as_str())));
                        self.render_nodes(body, scope, &inner, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// One line with its placeholders replaced, or `None` when an optional one is empty.
    fn render_line(&self, n: usize, line: &str, vars: &BTreeMap<&str, &str>) -> Result<Option<String>> {
        let mut out = String::new();
        let mut rest = line;
        for p in placeholders(line)? {
            let value = vars.get(p.name).ok_or_else(|| {
                anyhow!(
                    "{}:{n}: unknown placeholder {{{{{}}}}}: known here are {}",
                    self.name,
                    p.name,
                    vars.keys().copied().collect::<Vec<_>>().join(", ")
                )
            })?;
            if p.optional && value.is_empty() {
                return Ok(None);
            }
            let at = rest.find("{{").unwrap_or(0);
            out.push_str(&rest[..at]);
            out.push_str(value);
            rest = &rest[at + p.len..];
        }
        out.push_str(rest);
        Ok(Some(out))
    }
}

/// One `{{name}}` or `{{name?}}` in a line.
struct Placeholder<'a> {
    name: &'a str,
    optional: bool,
    /// Length of the whole `{{…}}` text.
    len: usize,
}

fn placeholders(line: &str) -> Result<Vec<Placeholder<'_>>> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| anyhow!("`{{{{` without `}}}}`"))?;
        let inner = &after[..close];
        let (name, optional) = match inner.strip_suffix('?') {
            Some(n) => (n, true),
            None => (inner, false),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("{{{{{inner}}}}} is not a placeholder (letters, digits and `_`, optionally ending in `?`)");
        }
        found.push(Placeholder {
            name,
            optional,
            len: close + 4,
        });
        rest = &after[close + 2..];
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        let mut s = Scope::default();
        s.vars.insert("board", "rpi3".into());
        s.vars.insert("empty", String::new());
        let item = |k: &str, v: &str| BTreeMap::from([("label", k.to_string()), ("x", v.to_string())]);
        s.lists.insert("entries", vec![item("a", "1"), item("b", "")]);
        s
    }

    #[test]
    fn substitutes_drops_optional_lines_and_repeats_blocks() {
        let t = Template::parse(
            "t",
            "{{! comment }}\nboard={{board}}\ngone={{empty?}}\nkept={{empty}}.\n{{#each entries}}\nlabel {{label}} on {{board}}\n x={{x?}}\n{{/each}}\nend\n",
        )
        .unwrap();
        assert_eq!(
            t.render(&scope()).unwrap(),
            "board=rpi3\nkept=.\nlabel a on rpi3\n x=1\nlabel b on rpi3\nend\n"
        );
    }

    #[test]
    fn errors_name_template_and_line() {
        for (text, want) in [
            ("a\n{{#each entries}}\nx\n", "t:2: `{{#each entries}}` is never closed"),
            ("{{/each}}\n", "t:1: `{{/each}}` without"),
            ("x {{board\n", "t:1: `{{` without `}}`"),
            ("x {{bo ard}}\n", "t:1: {{bo ard}} is not a placeholder"),
        ] {
            let e = Template::parse("t", text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let t = Template::parse("t", "ok\n{{nope}}\n").unwrap();
        let e = t.render(&scope()).unwrap_err().to_string();
        assert!(
            e.contains("t:2: unknown placeholder {{nope}}") && e.contains("board"),
            "{e}"
        );
        let t = Template::parse("t", "{{#each nope}}\n{{/each}}\n").unwrap();
        assert!(
            t.render(&scope())
                .unwrap_err()
                .to_string()
                .contains("t:1: unknown list \"nope\"")
        );
    }
}
