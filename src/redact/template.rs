//! Message templates (MiniJinja), checked against the backend's profile
//! when they are compiled.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use super::Redacted;
use super::fields::Field;
use super::profile::Profile;
use super::view::AlertView;

/// The variables every template may use, whatever its profile: the
/// envelope of [`AlertView`].
pub const ENVELOPE: [&str; 6] = ["alert_id", "rule", "priority", "reason", "late", "preview"];

/// A template compiled for one profile: it references only the envelope
/// ([`ENVELOPE`]) and fields that profile allows.
pub struct Template {
    name: String,
    profile: String,
    fields: BTreeSet<Field>,
    uses_preview: bool,
    env: Environment<'static>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.name)
            .field("profile", &self.profile)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

/// Why a template was refused or failed. Names templates, profiles and
/// variables; never a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateError {
    /// The source does not parse (`include`, `extends`, `import` and macros
    /// are not available: a template is one self-contained text).
    Syntax {
        /// Template name.
        template: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What is wrong (from the template source, which holds no PHI).
        problem: String,
    },
    /// The template references variables outside its profile.
    Variables {
        /// Template name.
        template: String,
        /// The profile it was compiled for.
        profile: String,
        /// Catalogue fields the profile does not allow, sorted.
        not_allowed: Vec<String>,
        /// Names that are neither the envelope nor a catalogue field, sorted.
        unknown: Vec<String>,
    },
    /// Rendered with a view redacted under a profile that does not allow a
    /// field the template uses.
    ProfileMismatch {
        /// Template name.
        template: String,
        /// The profile it was compiled for.
        template_profile: String,
        /// The profile of the view.
        view_profile: String,
        /// The first field the view's profile does not allow.
        variable: &'static str,
    },
    /// Rendering failed (the kind of failure only: its details may quote a value).
    Render {
        /// Template name.
        template: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// The kind of failure.
        kind: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Syntax {
                template,
                line,
                problem,
            } => write!(
                f,
                "template `{template}`: syntax error{}: {problem}",
                at_line(*line)
            ),
            TemplateError::Variables {
                template,
                profile,
                not_allowed,
                unknown,
            } => {
                write!(f, "template `{template}`: ")?;
                if !not_allowed.is_empty() {
                    write!(
                        f,
                        "references {} which profile `{profile}` does not allow",
                        quoted(not_allowed)
                    )?;
                    if !unknown.is_empty() {
                        write!(f, "; ")?;
                    }
                }
                if !unknown.is_empty() {
                    write!(
                        f,
                        "references unknown variable(s) {} (known: {}, and the fields of profile `{profile}`)",
                        quoted(unknown),
                        ENVELOPE.join(", ")
                    )?;
                }
                Ok(())
            }
            TemplateError::ProfileMismatch {
                template,
                template_profile,
                view_profile,
                variable,
            } => write!(
                f,
                "template `{template}` (profile `{template_profile}`) uses `{variable}`, which the view's profile `{view_profile}` does not allow"
            ),
            TemplateError::Render {
                template,
                line,
                kind,
            } => write!(
                f,
                "template `{template}`: rendering failed{}: {kind}",
                at_line(*line)
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

/// Compiles `source` as template `name` for `profile`. Refuses a syntax
/// error, and any variable the template reads (found by MiniJinja's static
/// analysis, whatever the control flow) that is neither in [`ENVELOPE`] nor
/// a field `profile` allows — naming every such variable.
///
/// The template language is MiniJinja with its built-in filters and tests
/// (`upper`, `default`, `truncate`, ...); no includes, imports, macros or
/// auto-escaping. Its built-in functions (`range`, `dict`, `namespace`) are
/// not variables of the view and are refused as unknown.
pub fn compile(name: &str, source: &str, profile: &Profile) -> Result<Template, TemplateError> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_template_owned(name.to_string(), source.to_string())
        .map_err(|e| TemplateError::Syntax {
            template: name.to_string(),
            line: e.line(),
            problem: e
                .detail()
                .map_or_else(|| e.kind().to_string(), str::to_string),
        })?;
    let tmpl = env.get_template(name).map_err(|e| TemplateError::Syntax {
        template: name.to_string(),
        line: e.line(),
        problem: e.kind().to_string(),
    })?;
    let mut used: Vec<String> = tmpl.undeclared_variables(false).into_iter().collect();
    used.sort();
    let mut fields = BTreeSet::new();
    let mut uses_preview = false;
    let mut not_allowed = Vec::new();
    let mut unknown = Vec::new();
    for v in used {
        if ENVELOPE.contains(&v.as_str()) {
            uses_preview |= v == "preview";
            continue;
        }
        match Field::parse(&v) {
            Some(f) if profile.allows(f) => {
                fields.insert(f);
            }
            Some(_) => not_allowed.push(v),
            None => unknown.push(v),
        }
    }
    if !not_allowed.is_empty() || !unknown.is_empty() {
        return Err(TemplateError::Variables {
            template: name.to_string(),
            profile: profile.name.clone(),
            not_allowed,
            unknown,
        });
    }
    Ok(Template {
        name: name.to_string(),
        profile: profile.name.clone(),
        fields,
        uses_preview,
        env,
    })
}

impl Template {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The profile it was compiled for.
    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// The catalogue fields it uses.
    pub fn fields(&self) -> &BTreeSet<Field> {
        &self.fields
    }

    /// Renders the template over `v`. The template sees the envelope and the
    /// fields it uses, nothing else; a field the event lacks is an empty
    /// string. Refuses a view whose profile does not allow a field the
    /// template uses ([`TemplateError::ProfileMismatch`]).
    pub fn render(&self, v: &Redacted<AlertView>) -> Result<String, TemplateError> {
        let view = v.get();
        if let Some(f) = self.fields.iter().find(|f| !view.allowed.contains(f)) {
            return Err(TemplateError::ProfileMismatch {
                template: self.name.clone(),
                template_profile: self.profile.clone(),
                view_profile: view.profile.clone(),
                variable: f.name(),
            });
        }
        let mut ctx: BTreeMap<&str, Value> = BTreeMap::new();
        ctx.insert("alert_id", Value::from(view.alert_id));
        ctx.insert("rule", Value::from(view.rule.as_str()));
        ctx.insert("priority", Value::from(view.priority));
        ctx.insert("reason", Value::from(view.reason));
        ctx.insert("late", Value::from(view.late));
        ctx.insert("preview", Value::from(view.preview.as_str()));
        for f in &self.fields {
            let value = view.values.get(f.name()).map_or("", String::as_str);
            ctx.insert(f.name(), Value::from(value));
        }
        let render_error = |e: minijinja::Error| TemplateError::Render {
            template: self.name.clone(),
            line: e.line(),
            kind: e.kind().to_string(),
        };
        let tmpl = self.env.get_template(&self.name).map_err(render_error)?;
        let ctx: BTreeMap<String, Value> =
            ctx.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        tmpl.render(Value::from(ctx)).map_err(render_error)
    }

    /// The fields that leave when only the rendered text is sent: those the
    /// template uses and the view has, plus those the preview line was made
    /// from when the template uses it, in catalogue order.
    pub fn fields_sent(&self, v: &Redacted<AlertView>) -> Vec<Field> {
        let view = v.get();
        let mut out: BTreeSet<Field> = self
            .fields
            .iter()
            .copied()
            .filter(|f| view.fields_sent.contains(f))
            .collect();
        if self.uses_preview {
            out.extend(view.preview_fields.iter().copied());
        }
        out.into_iter().collect()
    }
}
