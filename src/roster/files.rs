//! Reading a folder of TOML files and turning problems into [`ConfigError`]s
//! with file, line, column and field. Shared by `roster` and `rules`.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::config::ConfigError;
use crate::config::locate::{FieldPath, Locator};

/// One file's text, with the path it came from.
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
}

/// Reads every `*.toml` file of `dir`, sorted by file name.
pub(crate) fn read_dir(dir: &Path) -> Result<Vec<Source>, Vec<ConfigError>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![ConfigError {
            file: dir.to_path_buf(),
            line: None,
            column: None,
            field: String::new(),
            problem: format!("cannot read the folder: {e}"),
        }]
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        // Editors' temporary and lock files (`.name.toml.swp`, `.#name.toml`).
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    paths.sort();
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push(Source { path, text }),
            Err(e) => errors.push(ConfigError {
                file: path,
                line: None,
                column: None,
                field: String::new(),
                problem: format!("cannot read: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(sources)
    } else {
        Err(errors)
    }
}

/// Deserialises `text` (unknown fields are rejected by the raw types); a
/// syntax or type error names the file, line, column and the offending key.
pub(crate) fn parse_toml<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    locator: &Locator,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let pos = e.span().map(|s| locator.line_col(s.start));
        let field = e
            .span()
            .and_then(|s| text.get(s))
            .filter(|s| s.len() < 64 && !s.contains('\n'))
            .unwrap_or("")
            .trim()
            .to_string();
        ConfigError {
            file: path.to_path_buf(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            field,
            problem: e.message().trim().to_string(),
        }
    })
}

/// Collects errors for one file, placing each at its field.
pub(crate) struct Reporter<'a> {
    pub(crate) file: &'a Path,
    pub(crate) locator: &'a Locator,
}

impl Reporter<'_> {
    /// An error at `path`, positioned at the deepest part of it that exists.
    pub(crate) fn at(&self, path: &FieldPath, problem: impl Into<String>) -> ConfigError {
        let pos = self.locator.position(path);
        ConfigError {
            file: self.file.to_path_buf(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            field: path.to_string(),
            problem: problem.into(),
        }
    }
}

/// Serde helper: a field that takes one string or a list of strings.
pub(crate) mod one_or_many {
    use serde::de::{self, Deserializer, SeqAccess, Visitor};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(vec![v.to_string()])
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}
