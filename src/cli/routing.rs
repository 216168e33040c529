//! `switchboard oncall` and `switchboard route`: the operator's view of
//! rosters and mapping rules, without sending or storing anything.
//!
//! - `oncall ROLE [--scope UNIT] [--at TIME]`: who is on call, how to reach
//!   them, which definition put them there (rotation, shift, override or
//!   failsafe) and the span of that definition in UTC and in the roster's zone.
//! - `route FILE... [--at TIME] [--sender NAME]`: reads HL7 v2 or FHIR JSON,
//!   turns it into events exactly as the gateway does (sender claim, MSH-11,
//!   MSH-12, message type support, parse), and shows for each event every
//!   rule's verdict and, for each alert it would raise, the recipients per
//!   escalation tier at TIME.
//!
//! Invariant: nothing about the patient is ever printed — only whether the
//! event names one ("patient present"). Provider names are not printed
//! either: providers appear only as the roster members they resolve to.
//!
//! TIME is RFC 3339 (`2026-11-01T01:55:00-04:00`), or a local wall time
//! (`2026-11-01T01:55`) with `--zone Area/City`, resolved with the roster
//! DST policy (a time in a gap: the first instant after it; a time in a
//! fold: the earliest). Default: now, from [`Clock::system`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::{ConfigArg, EXIT_CONFIG, load};
use crate::alert::recipients::{Recipient, Resolver, describe, via_kind};
use crate::census::Census;
use crate::clock::Clock;
use crate::config::{Config, SenderConfig};
use crate::event::{ClinicalEvent, Priority, Processing};
use crate::parse::fhir::{self, FhirContext};
use crate::parse::{self, Charset, EventContext, Header, Support};
use crate::roster::schedule::{Resolution, resolve};
use crate::roster::{OnCall, Rosters, show_instant};
use crate::rules::{Decision, Route, RouteContext, RouteTarget, Rules, TierTarget};

/// When to resolve rosters.
#[derive(Debug, clap::Args)]
pub struct TimeArg {
    /// The instant: RFC 3339 (2026-11-01T01:55:00-04:00), or a local time
    /// (2026-11-01T01:55) with --zone. Default: now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// IANA zone (Area/City) of a --at given without a UTC offset.
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<String>,
}

/// `switchboard oncall`.
#[derive(Debug, clap::Args)]
pub struct OncallArgs {
    /// Configuration.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Role, e.g. `hospitalist`.
    #[arg(value_name = "ROLE")]
    pub role: String,
    /// Unit (PV1-3.1): the role scoped to it, else the unscoped role.
    #[arg(long, value_name = "UNIT")]
    pub scope: Option<String>,
    /// When.
    #[command(flatten)]
    pub time: TimeArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `switchboard route`.
#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// Configuration.
    #[command(flatten)]
    pub config: ConfigArg,
    /// HL7 v2 (`.hl7`, or text starting with MSH/FHS/BHS) or FHIR JSON (a
    /// resource or a Bundle). With several files and --json, one JSON object
    /// per line, in order.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// When.
    #[command(flatten)]
    pub time: TimeArg,
    /// The configured sender the file comes from (default: the first sender
    /// claiming MSH-3/MSH-4; for FHIR the first sender with FHIR tokens,
    /// else the first sender).
    #[arg(long, value_name = "NAME")]
    pub sender: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The instant asked for, and notes about how a local time was resolved.
fn instant(t: &TimeArg) -> Result<(DateTime<Utc>, Vec<String>), String> {
    let Some(text) = t.at.as_deref().map(str::trim) else {
        return Ok((Clock::system().now_utc(), Vec::new()));
    };
    if let Ok(d) = DateTime::parse_from_rfc3339(text) {
        return Ok((d.with_timezone(&Utc), Vec::new()));
    }
    let naive = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .ok_or_else(|| {
        format!(
            "--at `{text}` is neither RFC 3339 (2026-11-01T01:55:00-04:00) nor a local time (2026-11-01T01:55)"
        )
    })?;
    let Some(zone) = t.zone.as_deref() else {
        return Err(format!(
            "--at `{text}` has no UTC offset: add one (2026-11-01T01:55:00-04:00) or give --zone Area/City"
        ));
    };
    let tz: Tz = zone
        .parse()
        .map_err(|_| format!("--zone `{zone}` is not an IANA time zone (e.g. America/New_York)"))?;
    let (at, how) = resolve(tz, naive);
    let mut notes = Vec::new();
    match how {
        Resolution::Exact => {}
        Resolution::Gap => notes.push(format!(
            "{} does not exist in {} (DST gap): using the first instant after the gap, {}",
            naive.format("%Y-%m-%d %H:%M"),
            tz.name(),
            show_instant(tz, at)
        )),
        Resolution::Fold { later } => notes.push(format!(
            "{} happens twice in {} (DST fold): using the earliest, {}, not {}",
            naive.format("%Y-%m-%d %H:%M"),
            tz.name(),
            show_instant(tz, at),
            show_instant(tz, later)
        )),
    }
    Ok((at, notes))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("switchboard: {msg}");
    ExitCode::from(EXIT_CONFIG)
}

fn print_json<T: Serialize>(v: &T, pretty: bool) -> bool {
    let s = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    };
    match s {
        Ok(s) => {
            println!("{s}");
            true
        }
        Err(e) => {
            eprintln!("switchboard: {e}");
            false
        }
    }
}

// ---------------------------------------------------------------- oncall

/// A UTC interval with its local rendering.
#[derive(Debug, Serialize)]
struct SpanOut {
    start: String,
    end: String,
    start_local: String,
    end_local: String,
}

/// One person on call.
#[derive(Debug, Serialize)]
struct OnCallOut {
    member: String,
    display: String,
    contacts: BTreeMap<String, String>,
    /// `rotation`, `shift`, `override` or `failsafe`.
    via: &'static str,
    /// The definition (`rotations[0]`, `failsafe`).
    definition: String,
    roster: String,
    role: String,
    scope: Option<String>,
    failsafe: bool,
    /// `None` for a failsafe member (always on call).
    span: Option<SpanOut>,
    timezone: String,
}

#[derive(Debug, Serialize)]
struct OncallReport {
    role: String,
    scope: Option<String>,
    at: String,
    at_local: String,
    timezone: String,
    roster: String,
    /// The scope of the role definition used (`None`: the unscoped role).
    role_scope: Option<String>,
    notes: Vec<String>,
    on_call: Vec<OnCallOut>,
}

fn on_call_out(rosters: &Rosters, o: &OnCall) -> OnCallOut {
    let tz = rosters
        .roster(&o.roster)
        .map(|r| r.timezone)
        .unwrap_or(Tz::UTC);
    OnCallOut {
        member: o.member.id.clone(),
        display: o.member.display.clone(),
        contacts: o.member.contacts.clone(),
        via: via_kind(o),
        definition: o.via.to_string(),
        roster: o.roster.clone(),
        role: o.role.clone(),
        scope: o.scope.clone(),
        failsafe: o.failsafe,
        span: o.span.map(|s| SpanOut {
            start: rfc3339(s.start),
            end: rfc3339(s.end),
            start_local: s.start.with_timezone(&tz).to_rfc3339(),
            end_local: s.end.with_timezone(&tz).to_rfc3339(),
        }),
        timezone: tz.name().to_string(),
    }
}

fn all_roles(rosters: &Rosters) -> String {
    let mut names: Vec<&str> = rosters
        .rosters()
        .iter()
        .flat_map(|r| r.roles.iter().map(|x| x.name.as_str()))
        .collect();
    names.sort();
    names.dedup();
    names.join(", ")
}

/// `switchboard oncall`.
pub(super) fn oncall(a: OncallArgs) -> ExitCode {
    let cfg = match load(&a.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (at, notes) = match instant(&a.time) {
        Ok(x) => x,
        Err(e) => return usage(&e),
    };
    let rosters = &cfg.rosters;
    let scope = a.scope.as_deref();
    let scopes = rosters.role_scopes(&a.role);
    if scopes.is_empty() {
        return usage(&format!(
            "unknown role `{}` (roles: {})",
            a.role,
            all_roles(rosters)
        ));
    }
    let Some((ri, rl)) = rosters.find_role(&a.role, scope) else {
        let units: Vec<&str> = scopes.iter().flatten().copied().collect();
        return usage(&match scope {
            Some(u) => format!(
                "role `{}` is not defined for unit `{u}` and has no unscoped definition (units: {})",
                a.role,
                units.join(", ")
            ),
            None => format!(
                "role `{}` is only defined per unit: pass --scope (units: {})",
                a.role,
                units.join(", ")
            ),
        });
    };
    let roster = &rosters.rosters()[ri];
    let role_scope = roster.roles[rl].scope.clone();
    let mut notes = notes;
    if let (Some(u), None) = (scope, &role_scope) {
        notes.push(format!(
            "no `{}` role for unit `{u}`: the unscoped role covers it",
            a.role
        ));
    }
    let who = rosters.on_call(&a.role, scope, at);
    let report = OncallReport {
        role: a.role.clone(),
        scope: a.scope.clone(),
        at: rfc3339(at),
        at_local: at.with_timezone(&roster.timezone).to_rfc3339(),
        timezone: roster.timezone.name().to_string(),
        roster: roster.name.clone(),
        role_scope,
        notes,
        on_call: who.iter().map(|o| on_call_out(rosters, o)).collect(),
    };
    if a.json {
        if !print_json(&report, true) {
            return ExitCode::FAILURE;
        }
    } else {
        print!("{}", oncall_text(&report, roster.timezone, at));
    }
    if who.is_empty() {
        eprintln!(
            "switchboard: nobody is on call for `{}`, not even a failsafe",
            a.role
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn oncall_text(r: &OncallReport, tz: Tz, at: DateTime<Utc>) -> String {
    let mut s = String::new();
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    let _ = writeln!(
        s,
        "{}{} at {}: roster `{}`{}",
        r.role,
        r.scope
            .as_ref()
            .map(|u| format!(" (unit {u})"))
            .unwrap_or_default(),
        show_instant(tz, at),
        r.roster,
        match &r.role_scope {
            Some(u) => format!(", role for unit {u}"),
            None => ", unscoped role".to_string(),
        }
    );
    if r.on_call.is_empty() {
        let _ = writeln!(s, "  nobody");
    }
    for o in &r.on_call {
        let _ = writeln!(s, "  {}  {}", o.member, o.display);
        let contacts: Vec<String> = o.contacts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "    contacts: {}", contacts.join(", "));
        let how = if o.failsafe {
            if o.definition == "failsafe" {
                format!(
                    "failsafe (nobody scheduled): the failsafe member of roster `{}`",
                    o.roster
                )
            } else {
                format!(
                    "failsafe (nobody scheduled): role `{}`, {} of roster `{}`",
                    o.role, o.definition, o.roster
                )
            }
        } else {
            format!("{} ({}) of roster `{}`", o.via, o.definition, o.roster)
        };
        let _ = writeln!(s, "    via {how}");
        if let Some(span) = &o.span {
            let _ = writeln!(
                s,
                "    from {} ({} UTC) to {} ({} UTC)",
                show_local_rfc(&span.start_local),
                short_utc(&span.start),
                show_local_rfc(&span.end_local),
                short_utc(&span.end),
            );
            let _ = writeln!(s, "    zone {}", o.timezone);
        }
    }
    s
}

/// `2026-11-01T01:00:00-04:00` -> `2026-11-01 01:00 -04:00`.
fn show_local_rfc(t: &str) -> String {
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.format("%Y-%m-%d %H:%M %:z").to_string())
        .unwrap_or_else(|_| t.to_string())
}

/// `2026-11-01T05:00:00Z` -> `2026-11-01 05:00`.
fn short_utc(t: &str) -> String {
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|_| t.to_string())
}

// ----------------------------------------------------------------- route

/// One message (HL7) or resource (FHIR) of the file.
#[derive(Debug, Serialize)]
struct MessageOut {
    /// MSH-9 (`ORU^R01`) or the FHIR resource type.
    message_type: String,
    /// MSH-10, empty for FHIR.
    control_id: String,
    /// `P`, `T`, `D`.
    processing: String,
    /// `accepted`, `filtered` or `rejected`: what the gateway would do.
    outcome: &'static str,
    /// Why filtered or rejected (content-free).
    detail: Option<String>,
    /// Number of events.
    events: usize,
}

#[derive(Debug, Serialize)]
struct RuleOut {
    rule: String,
    /// `matched`, `not matched` or `not evaluated`.
    result: &'static str,
    /// The first criterion that failed.
    failed: Option<&'static str>,
    /// For a matched rule with re-routes: applied, or why not (no census, ...).
    reroute: Option<String>,
}

#[derive(Debug, Serialize)]
struct EventOut {
    /// Index in `events`.
    index: usize,
    /// Index in `messages`.
    message: usize,
    kind: &'static str,
    message_type: String,
    processing: &'static str,
    priority: &'static str,
    unit: Option<String>,
    facility: Option<String>,
    /// `present` or `absent`: never identifiers or names.
    patient: &'static str,
    observations: usize,
    /// Distinct OBX-8 flags of the observations.
    flags: Vec<String>,
    /// `routed`, `test` or `filtered`.
    decision: &'static str,
    filtered: Option<String>,
    rules: Vec<RuleOut>,
}

#[derive(Debug, Serialize)]
struct RecipientOut {
    member: String,
    display: String,
    /// `rotation`, `shift`, `override`, `failsafe`, `person` or
    /// `relation:<name>`.
    via: String,
    /// The roster definition (`rotations[0]`), when from a roster schedule.
    definition: Option<String>,
    roster: Option<String>,
    contacts: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct TierOut {
    /// Who this tier notifies, as configured.
    target: String,
    timeout_secs: u64,
    recipients: Vec<RecipientOut>,
    note: Option<String>,
}

#[derive(Debug, Serialize)]
struct AlertOut {
    /// Index in `events`.
    event: usize,
    rule: String,
    priority: &'static str,
    target: String,
    /// The role of a role target (or of the fallback of a relation).
    role: Option<String>,
    /// The unit of that role target.
    scope: Option<String>,
    template: Option<String>,
    escalation: String,
    /// False for training / debugging messages: never production recipients.
    production: bool,
    /// Delay-then-cancel: held this long before it is sent.
    hold_secs: Option<u64>,
    /// What cancels the held alert (`alarm-end`, `order-cancel`).
    hold_clear: Option<&'static str>,
    /// The census re-route applied: its condition and the replaced target.
    rerouted: Option<ReroutedOut>,
    /// Set when the event is critical and the rule's hold / grouping /
    /// keep-latest were not applied (`critical-result`, `high-priority-alarm`).
    safety_override: Option<&'static str>,
    tiers: Vec<TierOut>,
    /// What each configured backend would receive (redacted), or the
    /// default profile's view when none is configured.
    previews: Vec<PreviewOut>,
    note: Option<String>,
}

#[derive(Debug, Serialize)]
struct PreviewOut {
    /// Backend name (`(default)` when none is configured).
    backend: String,
    /// Its PHI profile.
    profile: String,
    /// The lock-screen line: never an identifier.
    preview: String,
    /// The rendered template, when the backend has one.
    text: Option<String>,
    /// The fields that would leave.
    fields: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ReroutedOut {
    /// `discharged` or `moved`.
    when: &'static str,
    /// The rule's own target, which the re-route replaced.
    from: String,
}

#[derive(Debug, Serialize)]
struct FileOut {
    file: String,
    /// `hl7v2` or `fhir`.
    format: &'static str,
    sender: Option<String>,
    timezone: Option<String>,
    at: String,
    notes: Vec<String>,
    messages: Vec<MessageOut>,
    events: Vec<EventOut>,
    /// Production alerts it would raise.
    alerts: Vec<AlertOut>,
    /// Alerts of training / debugging messages (`allow_test` rules): test
    /// destinations only.
    test_alerts: Vec<AlertOut>,
    /// Why nothing would be paged, or `None` when an alert would be.
    filtered: Option<String>,
    /// Why the file could not be routed (unreadable, no sender, rejected).
    error: Option<String>,
}

/// `switchboard route`.
pub(super) fn route(a: RouteArgs) -> ExitCode {
    let cfg = match load(&a.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (at, notes) = match instant(&a.time) {
        Ok(x) => x,
        Err(e) => return usage(&e),
    };
    if let Some(name) = &a.sender
        && !cfg.senders.iter().any(|s| s.name == *name)
    {
        let names: Vec<&str> = cfg.senders.iter().map(|s| s.name.as_str()).collect();
        return usage(&format!(
            "unknown sender `{name}` (configured: {})",
            names.join(", ")
        ));
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    let (census, census_note) = journal_census(&cfg);
    let mut notes = notes;
    notes.push(census_note);
    let pretty = a.files.len() == 1;
    let mut ok = true;
    for (i, path) in a.files.iter().enumerate() {
        let mut out = route_file(&cfg, path, a.sender.as_deref(), at, census.as_ref());
        out.notes.splice(0..0, notes.iter().cloned());
        if out.error.is_some() {
            ok = false;
        }
        if a.json {
            if !print_json(&out, pretty) {
                return ExitCode::FAILURE;
            }
        } else {
            if i > 0 {
                println!();
            }
            print!("{}", route_text(&out));
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn empty_report(path: &Path, at: DateTime<Utc>) -> FileOut {
    FileOut {
        file: path.display().to_string(),
        format: "hl7v2",
        sender: None,
        timezone: None,
        at: rfc3339(at),
        notes: Vec::new(),
        messages: Vec::new(),
        events: Vec::new(),
        alerts: Vec::new(),
        test_alerts: Vec::new(),
        filtered: None,
        error: None,
    }
}

/// True when `bytes` (after an optional BOM, MLLP start block and
/// whitespace) start like HL7 v2.
fn looks_like_hl7(bytes: &[u8]) -> bool {
    let b = strip_prefix(bytes);
    b.starts_with(b"MSH") || b.starts_with(b"FHS") || b.starts_with(b"BHS")
}

fn strip_prefix(bytes: &[u8]) -> &[u8] {
    let mut b = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    while let Some((first, rest)) = b.split_first() {
        if *first == 0x0b || first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// The census as the gateway has it now, rebuilt from the journal (read
/// only), and a note saying so or why it is not available.
fn journal_census(cfg: &Config) -> (Option<Census>, String) {
    use crate::journal::{SqliteStorage, Storage};
    let path = cfg.journal_path();
    if !path.is_file() {
        return (
            None,
            format!("census not available: no journal at {}", path.display()),
        );
    }
    let protection = match super::compliance::existing_protection(cfg) {
        Ok(p) => p,
        Err(e) => return (None, format!("census not available: {e}")),
    };
    match SqliteStorage::open_read_only(&path, Some(protection)).and_then(|mut s| s.census_load()) {
        Ok((c, report)) => {
            let c = c.with_nurse_role_codes(cfg.census.nurse_role_codes.iter().cloned());
            let note = format!(
                "census: {} patients, rebuilt from the journal ({} events, {} assignment changes replayed{}) — as it is now, whatever --at says",
                c.patients().count(),
                report.events,
                report.ops,
                report.snapshot.map_or(String::new(), |(_, e)| format!(
                    " after the snapshot at event {e}"
                ))
            );
            (Some(c), note)
        }
        Err(e) => (None, format!("census not available: {e}")),
    }
}

fn route_file(
    cfg: &Config,
    path: &Path,
    sender: Option<&str>,
    at: DateTime<Utc>,
    census: Option<&Census>,
) -> FileOut {
    let mut out = empty_report(path, at);
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            out.error = Some(format!("cannot read {}: {e}", path.display()));
            out.filtered = out.error.clone();
            return out;
        }
    };
    let hl7 = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("hl7"))
        || looks_like_hl7(&bytes);
    let events = if hl7 {
        hl7_events(cfg, &bytes, sender, &mut out)
    } else if strip_prefix(&bytes).starts_with(b"{") {
        out.format = "fhir";
        fhir_events(cfg, &bytes, sender, &mut out)
    } else {
        out.error = Some(
            "neither HL7 v2 (starts with MSH, FHS or BHS) nor FHIR JSON (starts with `{`)"
                .to_string(),
        );
        Vec::new()
    };
    let ctx = RouteContext { at, census };
    let resolver = Resolver {
        rosters: &cfg.rosters,
        at,
        census: ctx.census,
    };
    explain_events(&cfg.rules, &ctx, &resolver, &events, &mut out);
    add_previews(cfg, &events, at, &mut out);
    out
}

/// The redacted view each configured backend would get for each alert.
fn add_previews(
    cfg: &Config,
    events: &[(usize, ClinicalEvent)],
    at: DateTime<Utc>,
    out: &mut FileOut,
) {
    // (name, profile, template) per configured backend; the default
    // profile when none is configured.
    let mut backends: Vec<(
        String,
        crate::redact::Profile,
        Option<crate::redact::Template>,
    )> = cfg
        .backends
        .iter()
        .filter_map(|b| {
            let profile = crate::redact::builtin(&b.profile)?;
            let template = match &b.template {
                Some(t) => Some(crate::redact::compile(&b.name, t, &profile).ok()?),
                None => None,
            };
            Some((b.name.clone(), profile, template))
        })
        .collect();
    if backends.is_empty()
        && let Some(profile) = crate::redact::builtin(crate::redact::DEFAULT_PROFILE)
    {
        backends.push(("(default)".into(), profile, None));
    }
    let rules = &cfg.rules;
    for a in out.alerts.iter_mut().chain(out.test_alerts.iter_mut()) {
        let Some((_, ev)) = events.get(a.event) else {
            continue;
        };
        let route = rules.route_in(ev, &RouteContext { at, census: None });
        let routes = match route {
            Decision::Routed { routes, .. } | Decision::Test { routes, .. } => routes,
            Decision::Filtered { .. } => continue,
        };
        let Some(r) = routes.iter().find(|r| r.rule == a.rule) else {
            continue;
        };
        let alert = crate::alert::model::Alert::transient(r, ev, at);
        for (name, profile, template) in &backends {
            let view = crate::redact::redact(&alert, crate::alert::model::Reason::New, profile);
            a.previews.push(PreviewOut {
                backend: name.clone(),
                profile: profile.name.clone(),
                preview: view.get().preview.clone(),
                text: template.as_ref().and_then(|t| t.render(&view).ok()),
                fields: view
                    .get()
                    .fields_sent
                    .iter()
                    .map(|f| f.name().to_string())
                    .collect(),
            });
        }
    }
}

/// The first MSH of raw bytes, as the listener reads it before decoding.
fn sniff_raw(frame: &[u8]) -> Header {
    let start = frame.windows(3).position(|w| w == b"MSH").unwrap_or(0);
    let end = frame[start..]
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .map_or(frame.len(), |e| start + e);
    Header::sniff(&String::from_utf8_lossy(&frame[start..end]))
}

/// MSH-12 versions the gateway accepts: 2.1 through 2.9.x.
fn supported_version(v: &str) -> bool {
    let mut it = v.split('.');
    let major = it.next().and_then(|m| m.parse::<u32>().ok());
    let minor = it.next().and_then(|m| m.parse::<u32>().ok());
    matches!((major, minor), (Some(2), Some(1..=9)))
}

/// HL7 v2 file -> (message index, event), with what happened to each message
/// recorded in `out`; the same decision order as the listener's intake,
/// without the connection checks (networks, certificates).
fn hl7_events(
    cfg: &Config,
    bytes: &[u8],
    sender: Option<&str>,
    out: &mut FileOut,
) -> Vec<(usize, ClinicalEvent)> {
    // MLLP framing, if the file was captured with it.
    let mut frame = strip_prefix(bytes);
    while let Some(rest) = frame
        .strip_suffix(b"\r")
        .or_else(|| frame.strip_suffix(b"\n"))
        .or_else(|| frame.strip_suffix(b"\x1c"))
    {
        frame = rest;
    }
    let by_name = |n: &str| cfg.senders.iter().find(|s| s.name == n);
    let claim = |h: &Header| -> Option<&SenderConfig> {
        match sender {
            Some(n) => by_name(n),
            None => cfg
                .senders
                .iter()
                .find(|s| s.claims(&h.sending_application_id, &h.sending_facility_id)),
        }
    };
    let sniffed = sniff_raw(frame);
    let charset = claim(&sniffed)
        .and_then(|s| Charset::from_msh18(&s.default_charset))
        .unwrap_or(Charset::Utf8);
    let decoded = match parse::decode_frame(frame, charset) {
        Ok(d) => d,
        Err(e) => {
            out.error = Some(format!("rejected: {e}"));
            return Vec::new();
        }
    };
    let split = match parse::split(&decoded.text) {
        Ok(s) => s,
        Err(e) => {
            out.error = Some(format!("rejected: {e}"));
            return Vec::new();
        }
    };
    let mut events = Vec::new();
    for text in &split.messages {
        let mi = out.messages.len();
        let header = match Header::parse(text) {
            Ok(h) => h,
            Err(e) => {
                let h = Header::sniff(text);
                reject(out, &h, format!("{e}"));
                continue;
            }
        };
        let Some(s) = claim(&header) else {
            reject(
                out,
                &header,
                format!(
                    "no configured sender claims MSH-3 `{}` / MSH-4 `{}` (the gateway answers AR, UNKNOWN-SENDER); pass --sender NAME",
                    header.sending_application_id, header.sending_facility_id
                ),
            );
            continue;
        };
        if out.sender.is_none() {
            out.sender = Some(s.name.clone());
            out.timezone = Some(s.timezone.name().to_string());
        }
        let processing = Processing::from_code(&header.processing_id);
        if !processing.is_some_and(|p| s.processing_ids.contains(&p)) {
            reject(
                out,
                &header,
                format!(
                    "processing id `{}` is not accepted from sender `{}` (AR 202)",
                    header.processing_id, s.name
                ),
            );
            continue;
        }
        if !supported_version(&header.version) {
            reject(
                out,
                &header,
                "HL7 version not supported, 2.1 to 2.9 are (AR 203)".to_string(),
            );
            continue;
        }
        let mut m = MessageOut {
            message_type: message_type(&header),
            control_id: header.control_id.clone(),
            processing: header.processing_id.clone(),
            outcome: "accepted",
            detail: None,
            events: 0,
        };
        let support = parse::support(&header.message_code, &header.trigger);
        match support {
            Support::Supported => {
                let ctx = EventContext {
                    sender: &s.name,
                    timezone: s.timezone,
                };
                match parse::events(text, &header, &ctx) {
                    Ok(ev) => {
                        m.events = ev.len();
                        events.extend(ev.into_iter().map(|e| (mi, e)));
                    }
                    Err(e) => {
                        m.outcome = "rejected";
                        m.detail = Some(e.to_string());
                    }
                }
            }
            Support::UnsupportedType | Support::UnsupportedTrigger => {
                let what = if support == Support::UnsupportedType {
                    "message type not routed"
                } else {
                    "trigger event not routed"
                };
                if s.reject_unknown_types {
                    m.outcome = "rejected";
                    m.detail = Some(format!("{what} (sender rejects unknown types: AR)"));
                } else {
                    m.outcome = "filtered";
                    m.detail = Some(what.to_string());
                }
            }
        }
        if m.outcome == "rejected" && out.error.is_none() {
            out.error = Some(format!(
                "rejected: {}",
                m.detail.clone().unwrap_or_default()
            ));
        }
        out.messages.push(m);
    }
    if split.messages.is_empty() {
        out.error = Some("no message in the file".to_string());
    }
    events
}

fn message_type(h: &Header) -> String {
    if h.trigger.is_empty() {
        h.message_code.clone()
    } else {
        format!("{}^{}", h.message_code, h.trigger)
    }
}

fn reject(out: &mut FileOut, h: &Header, why: String) {
    if out.error.is_none() {
        out.error = Some(format!("rejected: {why}"));
    }
    out.messages.push(MessageOut {
        message_type: message_type(h),
        control_id: h.control_id.clone(),
        processing: h.processing_id.clone(),
        outcome: "rejected",
        detail: Some(why),
        events: 0,
    });
}

/// FHIR JSON (a resource or a Bundle) -> events.
fn fhir_events(
    cfg: &Config,
    bytes: &[u8],
    sender: Option<&str>,
    out: &mut FileOut,
) -> Vec<(usize, ClinicalEvent)> {
    let s = match sender {
        Some(n) => cfg.senders.iter().find(|s| s.name == n),
        None => cfg
            .senders
            .iter()
            .find(|s| !s.tokens_sha256.is_empty())
            .or_else(|| cfg.senders.first()),
    };
    let Some(s) = s else {
        out.error = Some("no sender is configured: pass --sender NAME".to_string());
        return Vec::new();
    };
    out.sender = Some(s.name.clone());
    out.timezone = Some(s.timezone.name().to_string());
    let ctx = FhirContext {
        source: &s.name,
        timezone: s.timezone,
    };
    let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let is_bundle = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("resourceType")
                .and_then(|t| t.as_str())
                .map(|t| t == "Bundle")
        })
        .unwrap_or(false);
    let mut events = Vec::new();
    let mut push = |out: &mut FileOut,
                    type_name: &str,
                    processing: Processing,
                    r: Result<Vec<ClinicalEvent>, String>| {
        let mi = out.messages.len();
        let mut m = MessageOut {
            message_type: type_name.to_string(),
            control_id: String::new(),
            processing: processing.code().to_string(),
            outcome: "accepted",
            detail: None,
            events: 0,
        };
        match r {
            Ok(ev) if ev.is_empty() => {
                m.outcome = "filtered";
                m.detail = Some("resource type raises no event".to_string());
            }
            Ok(ev) => {
                m.events = ev.len();
                events.extend(ev.into_iter().map(|e| (mi, e)));
            }
            Err(e) => {
                m.outcome = "rejected";
                if out.error.is_none() {
                    out.error = Some(format!("rejected: {e}"));
                }
                m.detail = Some(e);
            }
        }
        out.messages.push(m);
    };
    if is_bundle {
        let b = match fhir::parse_bundle(body) {
            Ok(b) => b,
            Err(e) => {
                out.error = Some(format!("rejected: {e}"));
                return Vec::new();
            }
        };
        let cx = b.context();
        for (i, e) in b.entries.iter().enumerate() {
            match &e.resource {
                None => {}
                Some(Ok(r)) => {
                    let res = fhir::events(r, Some(&cx), &ctx)
                        .map_err(|err| format!("Bundle.entry[{i}].resource: {err}"));
                    push(out, &r.type_name, r.processing, res);
                }
                Some(Err(err)) => push(
                    out,
                    "?",
                    b.processing,
                    Err(format!("Bundle.entry[{i}].resource: {err}")),
                ),
            }
        }
    } else {
        match fhir::parse_resource(body, None) {
            Ok(r) => {
                let res = fhir::events(&r, None, &ctx).map_err(|e| e.to_string());
                push(out, &r.type_name, r.processing, res);
            }
            Err(e) => out.error = Some(format!("rejected: {e}")),
        }
    }
    events
}

fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::Unspecified => "unspecified",
        Priority::Routine => "routine",
        Priority::Urgent => "urgent",
        Priority::Stat => "stat",
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn event_unit(ev: &ClinicalEvent) -> Option<String> {
    ev.location.as_ref().and_then(|l| non_empty(&l.unit))
}

/// Rules, decisions and alerts of every event, into `out`.
fn explain_events(
    rules: &Rules,
    ctx: &RouteContext<'_>,
    resolver: &Resolver<'_>,
    events: &[(usize, ClinicalEvent)],
    out: &mut FileOut,
) {
    let mut reasons: Vec<String> = out
        .messages
        .iter()
        .filter(|m| m.outcome != "accepted")
        .filter_map(|m| {
            m.detail.as_ref().map(|d| {
                if m.outcome == "rejected" {
                    format!("rejected: {d}")
                } else {
                    d.clone()
                }
            })
        })
        .collect();
    for (i, (mi, ev)) in events.iter().enumerate() {
        let mut flags: Vec<String> = ev
            .observations
            .iter()
            .flat_map(|o| o.flags.iter().map(|f| f.trim().to_string()))
            .filter(|f| !f.is_empty())
            .collect();
        flags.sort();
        flags.dedup();
        let decision = rules.route_in(ev, ctx);
        let (name, filtered) = match &decision {
            Decision::Routed { .. } => ("routed", None),
            Decision::Test { processing, .. } => (
                "test",
                Some(format!(
                    "processing id {} is not production: test destinations only, never production recipients",
                    processing.code()
                )),
            ),
            Decision::Filtered { reason } => ("filtered", Some(reason.to_string())),
        };
        if let Some(f) = &filtered {
            reasons.push(f.clone());
        }
        out.events.push(EventOut {
            index: i,
            message: *mi,
            kind: ev.kind.as_str(),
            message_type: format!("{}^{}", ev.source.message_type, ev.source.trigger),
            processing: ev.processing.code(),
            priority: priority_name(ev.priority),
            unit: event_unit(ev),
            facility: ev.location.as_ref().and_then(|l| non_empty(&l.facility)),
            patient: if ev.patient.identifiers.is_empty() && ev.patient.name.is_none() {
                "absent"
            } else {
                "present"
            },
            observations: ev.observations.len(),
            flags,
            decision: name,
            filtered,
            rules: rules
                .explain_in(ev, ctx)
                .into_iter()
                .map(|c| RuleOut {
                    reroute: c.reroute.map(|r| r.to_string()),
                    rule: c.rule,
                    result: match (c.evaluated, c.failed) {
                        (false, _) => "not evaluated",
                        (true, None) => "matched",
                        (true, Some(_)) => "not matched",
                    },
                    failed: if c.evaluated { c.failed } else { None },
                })
                .collect(),
        });
        match decision {
            Decision::Routed { routes, .. } => {
                for r in &routes {
                    out.alerts.push(alert_out(resolver, i, r, ev));
                }
            }
            Decision::Test {
                processing, routes, ..
            } => {
                for r in &routes {
                    let mut a = alert_out(resolver, i, r, ev);
                    a.production = false;
                    a.tiers.clear();
                    a.note = Some(format!(
                        "processing id {}: would go to test destinations only; never pages production recipients",
                        processing.code()
                    ));
                    out.test_alerts.push(a);
                }
            }
            Decision::Filtered { .. } => {}
        }
    }
    if out.alerts.is_empty() {
        if let Some(e) = &out.error
            && !reasons.iter().any(|r| r == e)
        {
            reasons.insert(0, e.clone());
        }
        let mut unique: Vec<String> = Vec::new();
        for r in reasons {
            if !unique.contains(&r) {
                unique.push(r);
            }
        }
        out.filtered = Some(if unique.is_empty() {
            "no event".to_string()
        } else {
            unique.join("; ")
        });
    }
}

/// One alert as `route` shows it: each tier with whom it reaches now.
fn alert_out(resolver: &Resolver<'_>, event: usize, r: &Route, ev: &ClinicalEvent) -> AlertOut {
    let (role, scope) = target_role(&r.target);
    let tiers = r
        .escalation
        .tiers
        .iter()
        .map(|t| {
            let target = match &t.target {
                TierTarget::Route => format!("route: {}", describe(&r.target)),
                TierTarget::Role { role, scope } => {
                    let patient = resolver.census.and_then(|c| c.patient_of_event(ev));
                    describe(&RouteTarget::Role {
                        role: role.clone(),
                        scope: scope.unit_for(ev, patient),
                    })
                }
                TierTarget::Relation(rel) => describe(&RouteTarget::Relation {
                    relation: *rel,
                    fallback: None,
                }),
                TierTarget::Person(id) => describe(&RouteTarget::Person { id: id.clone() }),
                TierTarget::Failsafe => "failsafe".to_string(),
            };
            let res = resolver.tier(r, t, ev);
            TierOut {
                target,
                timeout_secs: t.timeout_for(r.priority).as_secs(),
                recipients: res.recipients.iter().map(recipient_out).collect(),
                note: res.note,
            }
        })
        .collect();
    AlertOut {
        event,
        rule: r.rule.clone(),
        priority: r.priority.as_str(),
        target: describe(&r.target),
        role,
        scope,
        template: r.template.clone(),
        escalation: r.escalation.name.clone(),
        production: true,
        hold_secs: r.hold.map(|h| h.window.as_secs()),
        hold_clear: r.hold.map(|h| h.clear.as_str()),
        rerouted: r.rerouted.as_ref().map(|x| ReroutedOut {
            when: x.when.as_str(),
            from: describe(&x.from),
        }),
        safety_override: r.safety_override.map(|c| c.as_str()),
        tiers,
        previews: Vec::new(),
        note: None,
    }
}

fn recipient_out(r: &Recipient) -> RecipientOut {
    RecipientOut {
        member: r.member.id.clone(),
        display: r.member.display.clone(),
        via: r.via.clone(),
        definition: r.definition.clone(),
        roster: r.roster.clone(),
        contacts: r.member.contacts.clone(),
    }
}

fn target_role(t: &RouteTarget) -> (Option<String>, Option<String>) {
    match t {
        RouteTarget::Role { role, scope } => (Some(role.clone()), scope.clone()),
        RouteTarget::Relation {
            fallback: Some(f), ..
        } => target_role(f),
        _ => (None, None),
    }
}

fn route_text(o: &FileOut) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} ({}{}{}) at {} — nothing is sent or stored",
        o.file,
        if o.format == "fhir" {
            "FHIR JSON"
        } else {
            "HL7 v2"
        },
        o.sender
            .as_ref()
            .map(|x| format!(", sender {x}"))
            .unwrap_or_default(),
        o.timezone
            .as_ref()
            .map(|x| format!(", {x}"))
            .unwrap_or_default(),
        o.at
    );
    for n in &o.notes {
        let _ = writeln!(s, "note: {n}");
    }
    for (i, m) in o.messages.iter().enumerate() {
        let _ = writeln!(
            s,
            "message {}: {}{}, processing {}: {}{}",
            i + 1,
            m.message_type,
            if m.control_id.is_empty() {
                String::new()
            } else {
                format!(" control id {}", m.control_id)
            },
            if m.processing.is_empty() {
                "-"
            } else {
                &m.processing
            },
            m.outcome,
            m.detail
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
        if m.processing == "T" || m.processing == "D" {
            let _ = writeln!(
                s,
                "  {} message: journaled, never pages production recipients",
                if m.processing == "T" {
                    "training"
                } else {
                    "debugging"
                }
            );
        }
    }
    let width = o
        .events
        .iter()
        .flat_map(|e| e.rules.iter().map(|r| r.rule.len()))
        .max()
        .unwrap_or(0);
    for e in &o.events {
        let _ = writeln!(
            s,
            "event {}: {} ({}), priority {}, unit {}{}, patient {}{}",
            e.index + 1,
            e.kind,
            e.message_type,
            e.priority,
            e.unit.as_deref().unwrap_or("-"),
            e.facility
                .as_ref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default(),
            e.patient,
            if e.observations > 0 {
                format!(
                    ", {} observation(s), flags {}",
                    e.observations,
                    if e.flags.is_empty() {
                        "none".to_string()
                    } else {
                        e.flags.join(" ")
                    }
                )
            } else {
                String::new()
            }
        );
        for r in &e.rules {
            let _ = writeln!(
                s,
                "  rule {:<width$}  {}{}{}",
                r.rule,
                r.result,
                r.failed.map(|f| format!(" ({f})")).unwrap_or_default(),
                r.reroute
                    .as_ref()
                    .map(|x| format!(" ({x})"))
                    .unwrap_or_default()
            );
        }
        if let Some(f) = &e.filtered {
            let _ = writeln!(s, "  -> nothing paged: {f}");
        }
        for a in o
            .alerts
            .iter()
            .chain(o.test_alerts.iter())
            .filter(|a| a.event == e.index)
        {
            let _ = writeln!(
                s,
                "  alert {}: {} to {} (escalation {}{}){}",
                a.rule,
                a.priority.to_ascii_uppercase(),
                a.target,
                a.escalation,
                a.template
                    .as_ref()
                    .map(|t| format!(", template {t}"))
                    .unwrap_or_default(),
                if a.production { "" } else { " — TEST ONLY" }
            );
            if let Some(n) = &a.note {
                let _ = writeln!(s, "    {n}");
            }
            if let Some(x) = &a.rerouted {
                let _ = writeln!(
                    s,
                    "    re-routed ({}): the rule's target was {}",
                    x.when, x.from
                );
            }
            if let (Some(secs), Some(clear)) = (a.hold_secs, a.hold_clear) {
                let _ = writeln!(
                    s,
                    "    held {secs} s, then sent unless cancelled first ({clear})"
                );
            }
            if let Some(c) = a.safety_override {
                let _ = writeln!(s, "    {c}: sent at once, never held, grouped or replaced");
            }
            for p in &a.previews {
                let _ = writeln!(
                    s,
                    "    preview for {} ({}): {}",
                    p.backend, p.profile, p.preview
                );
                if let Some(t) = &p.text {
                    let _ = writeln!(s, "      text: {t}");
                }
            }
            for (i, t) in a.tiers.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "    tier {} ({}, {} s):{}",
                    i + 1,
                    t.target,
                    t.timeout_secs,
                    if t.recipients.is_empty() {
                        " nobody"
                    } else {
                        ""
                    }
                );
                if let Some(n) = &t.note {
                    let _ = writeln!(s, "      note: {n}");
                }
                for r in &t.recipients {
                    let contacts: Vec<String> =
                        r.contacts.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    let _ = writeln!(
                        s,
                        "      {}  {}  [{}{}{}]  {}",
                        r.member,
                        r.display,
                        r.via,
                        r.definition
                            .as_ref()
                            .filter(|d| d.as_str() != "failsafe")
                            .map(|d| format!(" {d}"))
                            .unwrap_or_default(),
                        r.roster
                            .as_ref()
                            .map(|x| format!(", roster {x}"))
                            .unwrap_or_default(),
                        contacts.join(", ")
                    );
                }
            }
        }
    }
    if let Some(e) = &o.error {
        let _ = writeln!(s, "error: {e}");
    }
    match &o.filtered {
        Some(f) => {
            let _ = writeln!(s, "result: nothing would be paged ({f})");
        }
        None => {
            let _ = writeln!(s, "result: {} alert(s) would be raised", o.alerts.len());
        }
    }
    s
}
