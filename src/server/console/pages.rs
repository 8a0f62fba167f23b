//! The console's pages. Each handler identifies the caller, works out the scope it shows,
//! checks that the caller may read there, then renders from the current snapshot.

use crate::policy::identity::{IdentifyError, Identity};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::feed::{FeedItem, RECENT};
use super::view::{self, Refusal, codes, link, page, refusal};
use super::{Caller, Console, READ_ACTIONS, identify, may_read};
use crate::live::LoadedPolicy;
use crate::policy::browse::ChainStart;
use crate::policy::explain::Explanation;
use crate::policy::plan::{PlanRequest, is_at_or_below};
use crate::policy::queries::HttpRequest;
use crate::policy::{CheckRequest, Reason, Snapshot, syntax};
use crate::server::App;

type Page = Result<Response, Refusal>;

/// The console and the current policy, or the refusal (404 when the console is off, 503
/// without a policy).
fn console(app: &App) -> Result<(&Console, Arc<LoadedPolicy>), Refusal> {
    let Some(console) = app.console.as_ref() else {
        return Err((StatusCode::NOT_FOUND, "not found\n")
            .into_response()
            .into());
    };
    let Some(policy) = app.policy.current() else {
        return Err(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "No policy loaded",
            html! { "The server has no policy loaded yet; see its log." },
        ));
    };
    Ok((console, policy))
}

/// The caller (400 for ambiguous identity headers, 401 without identity).
async fn caller(
    app: &App,
    console: &Console,
    snapshot: &Snapshot,
    headers: &HeaderMap,
) -> Result<Caller, Refusal> {
    match identify(app, snapshot, headers).await {
        Ok(Some(Identity {
            principal, groups, ..
        })) => {
            let (session, new_session) = match super::csrf::Csrf::session(headers) {
                Some(s) => (s, false),
                None => (
                    console.csrf.new_session().map_err(|e| {
                        refusal(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "Server error",
                            html! { (e.to_string()) },
                        )
                    })?,
                    true,
                ),
            };
            Ok(Caller {
                principal,
                groups,
                session,
                new_session,
            })
        }
        Ok(None) => Err(refusal(
            StatusCode::UNAUTHORIZED,
            "Sign-in needed",
            html! {
                "The console could not identify you: the request carries no identity the \
                 policy's identity sources accept."
            },
        )),
        Err(IdentifyError::Ambiguous(message)) => Err(refusal(
            StatusCode::BAD_REQUEST,
            "Ambiguous identity",
            html! { (message) },
        )),
        Err(IdentifyError::Rejected { reason, .. }) => Err(refusal(
            StatusCode::UNAUTHORIZED,
            "Sign-in needed",
            html! { "Your bearer token was refused (" (reason.to_string()) "): sign in again." },
        )),
    }
}

/// Refuses unless the caller may read at `scope`.
fn authorize(snapshot: &Snapshot, caller: &Caller, scope: &str) -> Result<(), Refusal> {
    match may_read(snapshot, caller, scope) {
        Ok(true) => Ok(()),
        Ok(false) => Err(refusal(
            StatusCode::FORBIDDEN,
            "Not allowed",
            html! {
                "You (" code { (caller.principal) } ") may not read at scope "
                code { (scope) } ". The console needs " code { (READ_ACTIONS[0]) } " or "
                code { (READ_ACTIONS[1]) } " there."
            },
        )),
        Err(e) => Err(refusal(
            StatusCode::BAD_REQUEST,
            "Invalid scope",
            html! { (e.to_string()) },
        )),
    }
}

/// Console, policy and caller, authorized at `scope`.
async fn enter<'a>(
    app: &'a App,
    headers: &HeaderMap,
    scope: &str,
) -> Result<(&'a Console, Arc<LoadedPolicy>, Caller), Refusal> {
    let (console, policy) = console(app)?;
    let caller = caller(app, console, &policy.snapshot, headers).await?;
    authorize(&policy.snapshot, &caller, scope)?;
    Ok((console, policy, caller))
}

/// The scope a page shows when the caller names none: the root when the caller may read
/// there, otherwise the first scope of the caller's own assignments where it may read.
fn home_scope(snapshot: &Snapshot, caller: &Caller) -> String {
    readable_scopes(snapshot, caller)
        .into_iter()
        .next()
        .unwrap_or_else(|| "/".to_owned())
}

/// Where the caller may read: the root, or else the scopes of its assignments that allow it.
fn readable_scopes(snapshot: &Snapshot, caller: &Caller) -> Vec<String> {
    if may_read(snapshot, caller, "/") == Ok(true) {
        return vec!["/".to_owned()];
    }
    snapshot
        .held_scopes(&caller.principal, &caller.groups)
        .into_iter()
        .filter(|s| may_read(snapshot, caller, s) == Ok(true))
        .map(str::to_owned)
        .collect()
}

/// Console, policy and caller, authorized at the scope asked for, or at the caller's home
/// scope when none is; returns that scope too.
async fn enter_at<'a>(
    app: &'a App,
    headers: &HeaderMap,
    asked: &str,
) -> Result<(&'a Console, Arc<LoadedPolicy>, Caller, String), Refusal> {
    let (console, policy) = console(app)?;
    let caller = caller(app, console, &policy.snapshot, headers).await?;
    let scope = match non_empty(asked) {
        Some(s) => s.to_owned(),
        None => home_scope(&policy.snapshot, &caller),
    };
    authorize(&policy.snapshot, &caller, &scope)?;
    Ok((console, policy, caller, scope))
}

/// Runs a query whose cost grows with the policy (Who can, Where can, the Role assignments
/// and Scopes lists) in the server's query pool: on a blocking thread, within the pool's
/// limit, stopped when the caller leaves; never on a runtime worker, where Check and
/// ext_authz run.
async fn in_pool<T: Send + 'static>(
    app: &App,
    query: impl FnOnce(&crate::server::query_pool::Cancel) -> T + Send + 'static,
) -> Result<T, Refusal> {
    app.queries.run(query).await.map_err(|status| {
        refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not answered",
            html! { (status.message()) },
        )
    })
}

fn non_empty(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

fn checked(flag: &Option<String>) -> bool {
    flag.as_deref()
        .is_some_and(|v| !v.is_empty() && v != "false")
}

pub async fn to_index() -> Redirect {
    Redirect::permanent("/console/")
}

pub async fn not_found() -> Refusal {
    refusal(
        StatusCode::NOT_FOUND,
        "Not found",
        html! { "No console page here. " a href="/console/" { "Console home" } },
    )
}

pub async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Page {
    let (_, policy, caller, _) = enter_at(&app, &headers, "").await?;
    let readable = readable_scopes(&policy.snapshot, &caller);
    let about = [
        "A principal, action and scope (or a method and path), and why the answer is what it is.",
        "Every role assignment and deny assignment, filtered by principal, role and scope.",
        "Each role's actions, not-actions, data actions, assignable scopes and implied actions.",
        "The scope tree with its links; what is assigned at a scope and what it inherits.",
        "Every principal and group allowed an action at a scope.",
        "The scopes where a principal may perform an action.",
        "The last denies and allows, live.",
        "Revision, sources, counts and the last reload error.",
    ];
    Ok(page(
        StatusCode::OK,
        "Console",
        "/console/",
        Some(&caller),
        html! {
            ul.pages {
                @for ((path, name), text) in view::PAGES.iter().zip(about) {
                    li { a href=(path) { (name) } " — " (text) }
                }
            }
            h2 { "Where you may read" }
            ul #readable {
                @for s in &readable { li { (view::scope(s)) " and below" } }
            }
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CheckQuery {
    principal: String,
    groups: String,
    action: String,
    scope: String,
    data: Option<String>,
    method: String,
    path: String,
    decision: String,
    /// A consistency token: answer on a policy at least that recent.
    at_least: String,
}

pub async fn check(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(mut q): Query<CheckQuery>,
) -> Page {
    let (console, policy) = console(&app)?;
    let caller = caller(&app, console, &policy.snapshot, &headers).await?;
    let mut notes: Vec<String> = Vec::new();
    // A consistency token: wait until the policy includes the write it names. Only for a
    // caller who may read at the scope asked (or its home scope; a route's scope is
    // authorized again below): nothing is waited for, or said about the store, before.
    let policy = match non_empty(&q.at_least) {
        Some(token) => {
            let asked = non_empty(&q.scope)
                .map_or_else(|| home_scope(&policy.snapshot, &caller), str::to_owned);
            authorize(&policy.snapshot, &caller, &asked)?;
            crate::store::wait_for(&*app, token, None)
                .await
                .map_err(|e| match e {
                    crate::store::TokenError::Invalid(m) => refusal(
                        StatusCode::BAD_REQUEST,
                        "Invalid consistency token",
                        html! { (m) },
                    ),
                    crate::store::TokenError::Behind(m) => refusal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Not caught up",
                        html! { (m) },
                    ),
                })?;
            let policy = app.policy.current().unwrap_or(policy);
            notes.push(format!(
                "Answered at consistency token {} or later (the policy answers at {}).",
                syntax::escape(token),
                crate::store::token_of(&policy)
            ));
            policy
        }
        None => policy,
    };
    let snapshot = &policy.snapshot;
    if let Some(id) = non_empty(&q.decision) {
        // A decision is explained only to a caller who may read at its scope; to anyone
        // else it is as unknown as one no longer kept (its scope, principal and time are
        // not theirs to learn).
        let readable = console.feed.find(id).filter(|item| {
            may_read(snapshot, &caller, item.scope.as_deref().unwrap_or("/")) == Ok(true)
        });
        match readable {
            Some(item) => {
                q.principal = item.principal.clone().unwrap_or_default();
                q.action = item.action.clone().unwrap_or_default();
                // A decision without a scope (no route matched) is about the whole policy.
                q.scope = item.scope.clone().unwrap_or_else(|| "/".to_owned());
                q.data = item.data_action.then(|| "on".to_owned());
                notes.push(format!(
                    "Decision {} at {} ({}, {}), explained against the policy serving now.",
                    item.decision_id, item.time, item.api, item.reason
                ));
            }
            None => notes.push(format!(
                "Decision {} is not one the console can show you: it keeps the last {RECENT} \
                 denies and allows, and explains those at scopes where you may read.",
                syntax::escape(id)
            )),
        }
    }
    let groups: Vec<String> = q
        .groups
        .split([',', ' '])
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect();
    let at = syntax::now();
    // A method and path are first mapped to an action and scope by the routes.
    let mut data = checked(&q.data);
    let route_error = map_route(snapshot, &mut q, &groups, at, &mut data, &mut notes);
    let scope = match non_empty(&q.scope) {
        Some(s) => s.to_owned(),
        None => home_scope(snapshot, &caller),
    };
    authorize(snapshot, &caller, &scope)?;
    let asked = non_empty(&q.principal).is_some()
        && non_empty(&q.action).is_some()
        && non_empty(&q.scope).is_some();
    let explanation = asked.then(|| {
        snapshot.explain_check(&CheckRequest {
            principal: q.principal.trim(),
            groups: &groups,
            action: q.action.trim(),
            data_action: data,
            scope: q.scope.trim(),
            at,
        })
    });
    let status = match &explanation {
        Some(Err(_)) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    let body = html! {
        form.query method="get" action="/console/check" {
            label { "Principal" input type="text" name="principal" value=(q.principal) placeholder="user:alice@contoso.com" required; }
            label { "Extra groups (token groups, comma-separated)" input type="text" name="groups" value=(q.groups); }
            label { "Action" input type="text" name="action" value=(q.action) placeholder="Microsoft.Edge/targets/read"; }
            label { "Scope" input type="text" name="scope" value=(q.scope) placeholder="/subscriptions/s1"; }
            label.inline { input type="checkbox" name="data" value="on" checked[data]; "Data action" }
            fieldset {
                legend { "Or a request (mapped by the policy's routes)" }
                label { "Method" input type="text" name="method" value=(q.method) placeholder="GET"; }
                label { "Path" input type="text" name="path" value=(q.path) placeholder="/subscriptions/s1/..."; }
            }
            label { "Consistency token (optional: answer at least this recent)" input type="text" name="at_least" value=(q.at_least) placeholder="r42"; }
            button type="submit" { "Check access" }
        }
        @for note in &notes { p.notice { (note) } }
        @if let Some(message) = &route_error { p.error role="alert" { (message) } }
        @match &explanation {
            Some(Ok(e)) => (explained(snapshot, &q.principal, &groups, q.action.trim(), q.scope.trim(), data, e)),
            Some(Err(e)) => p.error role="alert" { (e.to_string()) },
            None => {}
        }
    };
    Ok(page(
        status,
        "Check access",
        "/console/check",
        Some(&caller),
        body,
    ))
}

/// The check page's method and path, mapped by the policy's routes to the action and scope
/// checked (written into `q` and `data`, with a note). Returns why they could not be.
fn map_route(
    snapshot: &Snapshot,
    q: &mut CheckQuery,
    groups: &[String],
    at: syntax::Instant,
    data: &mut bool,
    notes: &mut Vec<String>,
) -> Option<String> {
    let mut route_error: Option<String> = None;
    if non_empty(&q.method).is_some() != non_empty(&q.path).is_some()
        || (non_empty(&q.method).is_some() && non_empty(&q.principal).is_none())
    {
        route_error = Some("A request needs a principal, a method and a path.".to_owned());
    }
    if let (Some(method), Some(path), Some(principal)) = (
        non_empty(&q.method),
        non_empty(&q.path),
        non_empty(&q.principal),
    ) {
        let no_headers: Vec<(String, String)> = Vec::new();
        match snapshot.check_http(&HttpRequest {
            method,
            path,
            headers: &no_headers,
            principal: Some(principal),
            groups,
            metadata: None,
            peer_principal: None,
            verifier: None,
            at,
        }) {
            Ok(outcome) => match (outcome.action, outcome.scope) {
                (Some(action), Some(scope)) => {
                    notes.push(format!(
                        "{} {} maps to action {} at scope {}.",
                        syntax::escape(method),
                        syntax::escape(path),
                        syntax::escape(&action),
                        syntax::escape(&scope)
                    ));
                    q.action = action;
                    q.scope = scope;
                    *data = outcome.data_action;
                }
                _ => {
                    route_error = Some(match outcome.decision.reason {
                        Reason::Public => "The route is public: anyone may pass.".to_owned(),
                        Reason::Malformed { message } => {
                            format!("The request is malformed: {message}")
                        }
                        _ => format!(
                            "No route matches {} {}: such a request is denied (noRoute).",
                            syntax::escape(method),
                            syntax::escape(path)
                        ),
                    })
                }
            },
            Err(e) => route_error = Some(e.to_string()),
        }
    }
    route_error
}

/// A decision, as a person reads it.
fn explained(
    snapshot: &Snapshot,
    principal: &str,
    groups: &[String],
    action: &str,
    scope: &str,
    data: bool,
    e: &Explanation<'_>,
) -> Markup {
    let principal = principal.trim();
    let verdict = if e.decision.allowed { "allow" } else { "deny" };
    let plane = if data { "data action" } else { "action" };
    html! {
        section.result.(verdict) aria-labelledby="result-heading" #result {
            h2 #result-heading { "Result" }
            @if e.decision.allowed {
                p.verdict.allow { "Allowed" }
            } @else {
                p.verdict.deny { "Denied" }
            }
            p {
                code { (principal) } " asking for " (plane) " " code { (action) } " at "
                code { (scope) } " — reason " code #reason { (e.decision.reason.kind()) } "."
            }
            @match &e.decision.reason {
                Reason::RoleAssignment { role, assignment_id, scope: at, via } => {
                    p #grant {
                        "Granted by role " strong { (view::role(role)) } ", assigned at "
                        (view::scope(at))
                        @if let Some(id) = assignment_id { " (assignment " code { (id) } ")" }
                        " to " (view::principal(via)) "."
                    }
                    (chain(snapshot, principal, groups, via))
                }
                Reason::DenyAssignment { deny_assignment } => {
                    p #deny {
                        "Denied by deny assignment " strong { code { (deny_assignment) } }
                        ". Deny assignments are checked before any grant: no role assignment can override it."
                    }
                    @for d in snapshot.deny_views().iter().filter(|d| d.name == *deny_assignment) {
                        dl.facts {
                            dt { "Its scope" } dd { (view::scope(d.scope)) }
                            dt { "Applies to" } dd { (codes(&d.principals.iter().map(String::as_str).collect::<Vec<_>>())) }
                            dt { "Except" } dd { (codes(&d.exclude.iter().map(String::as_str).collect::<Vec<_>>())) }
                            dt { "Actions" } dd { (codes(&d.actions)) }
                            dt { "Data actions" } dd { (codes(&d.data_actions)) }
                        }
                    }
                }
                Reason::NoGrant => {
                    p #nogrant {
                        "No role assignment grants " code { (action) } " at " code { (scope) }
                        " or above to the principal or its groups."
                    }
                }
                _ => {}
            }
            h3 { "Groups of the principal" }
            @if e.groups_of_principal.is_empty() {
                p #groups { "None: the policy puts the principal in no group." }
            } @else {
                ul #groups { @for g in &e.groups_of_principal { li { (view::principal(g)) } } }
            }
            @if !e.decision.allowed {
                h3 { "Near misses" }
                @if e.near_misses.is_empty() {
                    p #near-misses { "The principal and its groups hold no assignment at this scope or above." }
                } @else {
                    table #near-misses {
                        caption { "Assignments held at this scope or above, and why each does not grant " code { (action) } }
                        thead { tr { th scope="col" { "Assignment" } th scope="col" { "Role" } th scope="col" { "Scope" } th scope="col" { "Held by" } th scope="col" { "Why it does not grant" } } }
                        tbody {
                            @for miss in &e.near_misses {
                                @if let Reason::RoleAssignment { role, assignment_id, scope: at, via } = &miss.assignment {
                                    tr {
                                        td { code { (assignment_id.unwrap_or("(no id)")) } }
                                        td { (view::role(role)) }
                                        td { (view::scope(at)) }
                                        td { (view::principal(via)) }
                                        td { (miss.reason.message(action, data)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The chain of memberships from the principal to the subject that held the grant.
fn chain(snapshot: &Snapshot, principal: &str, groups: &[String], via: &str) -> Markup {
    match snapshot.membership_chain(principal, groups, via) {
        Some((ChainStart::Principal, steps)) if steps.is_empty() => html! {
            p #chain { "The assignment names the principal itself." }
        },
        Some((start, steps)) => html! {
            p { "How the principal holds it:" }
            ol.chain #chain {
                @match start {
                    ChainStart::Principal => li { (view::principal(principal)) " (the principal)" },
                    ChainStart::TokenGroup(g) => li { (view::principal(&g)) " (a group the caller's token names)" },
                }
                @for step in &steps { li { "member of " (view::principal(step)) } }
            }
        },
        None => html! {},
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AssignmentsQuery {
    principal: String,
    role: String,
    scope: String,
}

/// The most scopes the Scopes page lists in its tree.
const TREE_LIMIT: usize = 1000;

/// How an assignment's scope relates to the scope filtered on (`ancestors`: its known
/// ancestors). Compares in place, ASCII case ignored, as scopes compare.
fn relation(filter: &str, ancestors: &[&str], scope: &str) -> Option<&'static str> {
    let scope = syntax::trim_scope(scope);
    if scope.eq_ignore_ascii_case(syntax::trim_scope(filter)) {
        Some("here")
    } else if ancestors.iter().any(|a| a.eq_ignore_ascii_case(scope)) {
        Some("inherited")
    } else if is_at_or_below(scope, filter) {
        Some("below")
    } else {
        None
    }
}

pub async fn assignments(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<AssignmentsQuery>,
) -> Page {
    let (console, policy, caller, scope) = enter_at(&app, &headers, &q.scope).await?;
    // With a store, the ids of the assignments it holds (the ones the console may remove).
    let stored: Option<std::collections::HashSet<String>> = app.store.get().map(|store| {
        store
            .inputs()
            .objects
            .as_ref()
            .map(|objects| {
                objects
                    .keys()
                    .filter_map(|k| k.strip_prefix("assignments/"))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    });
    let token = console.csrf.token(&caller.session, &caller.principal);
    // The rows grow with the policy: filtered and written in the query pool.
    let body = in_pool(&app, move |_| {
        let snapshot = &policy.snapshot;
        let ancestors = snapshot.scope_ancestors(&scope);
        let p = q.principal.trim().to_ascii_lowercase();
        let r = q.role.trim().to_ascii_lowercase();
        let rows: Vec<_> = snapshot
            .assignment_views()
            .into_iter()
            .filter(|a| p.is_empty() || a.principal.to_ascii_lowercase().contains(&p))
            .filter(|a| r.is_empty() || a.role.to_ascii_lowercase().contains(&r))
            .filter_map(|a| relation(&scope, &ancestors, a.scope).map(|rel| (a, rel)))
            .collect();
        let denies: Vec<_> = snapshot
            .deny_views()
            .into_iter()
            .filter(|d| relation(&scope, &ancestors, d.scope).is_some())
            .collect();
        html! {
            form.query method="get" action="/console/assignments" {
                label { "Principal contains" input type="text" name="principal" value=(q.principal); }
                label { "Role contains" input type="text" name="role" value=(q.role); }
                label { "Scope (at, above and below)" input type="text" name="scope" value=(q.scope) placeholder="/"; }
                button type="submit" { "Filter" }
            }
            @if stored.is_some() {
                form.write #add-assignment method="post" action="/console/assignments" {
                    h2 { "Add a role assignment" }
                    p.muted { "Written through the Admin API: you may only grant what you hold, at a scope the role may be assigned to, and the policy's constraints must still hold." }
                    input type="hidden" name="csrf" value=(token);
                    input type="hidden" name="op" value="add";
                    label { "Principal" input #add-principal type="text" name="principal" placeholder="user:bob@contoso.com" required; }
                    label { "Role (name or id)" input #add-role type="text" name="role" placeholder="Reader" required; }
                    label { "Scope" input #add-scope type="text" name="scope" value=(scope) required; }
                    label { "Id (optional)" input #add-id type="text" name="id"; }
                    fieldset {
                        legend { "Active (optional: a time-bound assignment)" }
                        p.muted #window-hint {
                            "RFC 3339 times, such as 2027-01-01T08:00:00Z or 2027-01-01T09:00:00+01:00; \
                             a time written without an offset (2027-01-01T08:00) is taken as UTC. \
                             The assignment grants from Not before up to, not including, Not after."
                        }
                        label { "Not before" input #add-not-before type="text" name="not_before" placeholder="2027-01-01T00:00:00Z" aria-describedby="window-hint"; }
                        label { "Not after" input #add-not-after type="text" name="not_after" placeholder="2027-12-31T00:00:00Z" aria-describedby="window-hint"; }
                    }
                    button type="submit" { "Add assignment" }
                }
                p.notice {
                    "Assignments held by the role-assignment store can be removed below; the others \
                     come from the policy sources: change them there."
                }
            } @else {
                p.notice {
                    "Role assignments here come from the policy sources; change them there. Adding and \
                     removing assignments from the console needs the role-assignment store and its \
                     Admin API, which this server does not run."
                }
            }
            table #assignments {
                caption { (rows.len()) " role assignments" }
                thead { tr {
                    th scope="col" { "Id" } th scope="col" { "Role" } th scope="col" { "Principal" } th scope="col" { "Scope" } th scope="col" { "Relation to " code { (scope) } } th scope="col" { "Active" }
                    @if stored.is_some() { th scope="col" { "Remove" } }
                } }
                tbody {
                    @for (a, rel) in &rows {
                        tr {
                            td { code { (a.id.unwrap_or("(no id)")) } }
                            td { (view::role(a.role)) }
                            td { (view::principal(a.principal)) }
                            td { (view::scope(a.scope)) }
                            td { (rel) }
                            td {
                                @match (&a.not_before, &a.not_after) {
                                    (None, None) => "always",
                                    (from, until) => { "from " (from.as_deref().unwrap_or("the start")) " until " (until.as_deref().unwrap_or("no end")) }
                                }
                            }
                            @if let Some(stored) = &stored {
                                td {
                                    @match a.id.filter(|id| stored.contains(*id)) {
                                        Some(id) => {
                                            form.remove method="post" action="/console/assignments" {
                                                input type="hidden" name="csrf" value=(token);
                                                input type="hidden" name="op" value="remove";
                                                input type="hidden" name="id" value=(id);
                                                button type="submit" aria-label=(format!("Remove assignment {id}")) { "Remove" }
                                            }
                                        }
                                        None => span.muted { "from the policy sources" },
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Deny assignments" }
            table #deny-assignments {
                caption { (denies.len()) " deny assignments at, above or below " code { (scope) } }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Scope" } th scope="col" { "Applies to" } th scope="col" { "Except" } th scope="col" { "Actions" } th scope="col" { "Data actions" } } }
                tbody {
                    @for d in &denies {
                        tr {
                            td { code { (d.name) } }
                            td { (view::scope(d.scope)) }
                            td { (codes(&d.principals.iter().map(String::as_str).collect::<Vec<_>>())) }
                            td { (codes(&d.exclude.iter().map(String::as_str).collect::<Vec<_>>())) }
                            td { (codes(&d.actions)) " " @if !d.not_actions.is_empty() { "except " (codes(&d.not_actions)) } }
                            td { (codes(&d.data_actions)) " " @if !d.not_data_actions.is_empty() { "except " (codes(&d.not_data_actions)) } }
                        }
                    }
                }
            }
        }
    })
    .await?;
    Ok(page(
        StatusCode::OK,
        "Role assignments",
        "/console/assignments",
        Some(&caller),
        body,
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WriteForm {
    csrf: String,
    /// `add` or `remove`.
    op: String,
    id: String,
    principal: String,
    role: String,
    scope: String,
    /// The optional time window of an added assignment (see [`form_time`]).
    not_before: String,
    not_after: String,
}

/// A time from the add form as the Admin API takes it (RFC 3339, in UTC): empty stays
/// empty (no bound); an RFC 3339 time is converted to UTC; a date and time without an
/// offset (what a `datetime-local` control sends: `2027-01-01T08:00`, seconds optional) is
/// taken as UTC. Anything else is refused in words naming the field.
fn form_time(field: &'static str, text: &str) -> Result<String, NotATime> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(String::new());
    }
    let local = |t: &str| {
        let t = t.replacen(' ', "T", 1);
        match t.len() {
            16 => format!("{t}:00Z"),
            _ => format!("{t}Z"),
        }
    };
    syntax::parse_time(text)
        .or_else(|e| {
            // Only a bare date and time gets the UTC reading; a malformed offset does not.
            let bare = text.len() <= 29
                && text
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b"-:T .".contains(&b));
            if bare {
                syntax::parse_time(&local(text))
            } else {
                Err(e)
            }
        })
        .map(syntax::format_time)
        .map_err(|_| NotATime {
            field,
            text: text.to_owned(),
        })
}

/// A form's time field that holds no time (`text` as sent; escaped when shown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{field} `{}` is not a time: write it in RFC 3339, such as 2027-01-01T00:00:00Z (a date \
     and time without an offset is taken as UTC)",
    syntax::escape(text)
)]
struct NotATime {
    field: &'static str,
    text: String,
}

/// The HTTP status of a refused Admin API write.
fn http_status(code: tonic::Code) -> StatusCode {
    match code {
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition | tonic::Code::Aborted => {
            StatusCode::CONFLICT
        }
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An assignment the Admin API added: (the confirmation, principal, scope, token).
fn added(
    r: crate::proto::iotauthz::v1::CreateRoleAssignmentResponse,
) -> (String, String, String, String) {
    let a = r.assignment.unwrap_or_default();
    let window = match (a.not_before.as_str(), a.not_after.as_str()) {
        ("", "") => String::new(),
        (from, until) => format!(
            ", active from {} until {}",
            if from.is_empty() { "the start" } else { from },
            if until.is_empty() { "no end" } else { until }
        ),
    };
    (
        format!(
            "Added role assignment {}: {} has role {} at {}{window}.",
            a.id, a.principal, a.role, a.scope
        ),
        a.principal,
        a.scope,
        r.token,
    )
}

/// Adding or removing an assignment: the anti-forgery check, then the Admin API's own
/// write path in-process (the same identity, authorization, validation, transaction and
/// audit line as `CreateRoleAssignment` / `DeleteRoleAssignment`), its refusal shown in
/// words, or its consistency token with a link to Check access at that token.
pub async fn assignments_write(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<WriteForm>,
) -> Page {
    use crate::proto::iotauthz::v1 as pb;
    use pb::admin_server::Admin as _;
    let (console, policy) = console(&app)?;
    let caller = caller(&app, console, &policy.snapshot, &headers).await?;
    if let Err(e) = console
        .csrf
        .verify(&headers, non_empty(&form.csrf), &caller.principal)
    {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "Request refused",
            html! { (e.to_string()) },
        ));
    }
    let back = html! { p { a href="/console/assignments" { "Back to Role assignments" } } };
    if app.store.get().is_none() {
        return Ok(page(
            StatusCode::NOT_IMPLEMENTED,
            "Role assignments",
            "/console/assignments",
            Some(&caller),
            html! {
                p.error role="alert" #write-refused {
                    "Not changed: adding and removing role assignments needs the role-assignment \
                     store and its Admin API, which this server does not run. Change the policy \
                     sources instead."
                }
                (back)
            },
        ));
    }
    let admin = crate::server::admin::Admin::new(app.clone());
    let metadata = tonic::metadata::MetadataMap::from_headers(headers.clone());
    fn request<T>(metadata: &tonic::metadata::MetadataMap, body: T) -> tonic::Request<T> {
        tonic::Request::from_parts(metadata.clone(), Default::default(), body)
    }
    // The window of an added assignment, in the form the Admin API takes; a time that
    // is not one is refused here, in words, before anything is asked of the store.
    let window = match form.op.as_str() {
        "add" => form_time("Not before", &form.not_before)
            .and_then(|from| Ok((from, form_time("Not after", &form.not_after)?))),
        _ => Ok(Default::default()),
    };
    let (not_before, not_after) = match window {
        Ok(window) => window,
        Err(message) => {
            return Ok(page(
                StatusCode::BAD_REQUEST,
                "Role assignments",
                "/console/assignments",
                Some(&caller),
                html! {
                    p.error role="alert" #write-refused { "Not changed: " (message) }
                    (back)
                },
            ));
        }
    };
    // What was written: (done, principal, scope) for the confirmation, and the token.
    let result = match form.op.as_str() {
        "add" => admin
            .create_role_assignment(request(
                &metadata,
                pb::CreateRoleAssignmentRequest {
                    assignment: Some(pb::RoleAssignment {
                        id: form.id.trim().to_owned(),
                        principal: form.principal.trim().to_owned(),
                        role: form.role.trim().to_owned(),
                        scope: form.scope.trim().to_owned(),
                        not_before,
                        not_after,
                    }),
                },
            ))
            .await
            .map(|r| added(r.into_inner())),
        "remove" => {
            // The assignment as the serving policy has it, for the link to Check access.
            let (principal, scope) = policy
                .snapshot
                .assignment_views()
                .iter()
                .find(|a| a.id == Some(form.id.trim()))
                .map(|a| (a.principal.to_owned(), a.scope.to_owned()))
                .unwrap_or_default();
            admin
                .delete_role_assignment(request(
                    &metadata,
                    pb::DeleteRoleAssignmentRequest {
                        id: form.id.trim().to_owned(),
                    },
                ))
                .await
                .map(|r| {
                    (
                        format!("Removed role assignment {}.", form.id.trim()),
                        principal,
                        scope,
                        r.into_inner().token,
                    )
                })
        }
        _ => Err(tonic::Status::invalid_argument(
            "the form asks for neither adding nor removing an assignment",
        )),
    };
    let (status, body) = match result {
        Ok((done, principal, scope, token)) => (
            StatusCode::OK,
            html! {
                p.success #write-result role="status" { (done) }
                p { "Consistency token: " code #write-token { (token) } }
                p {
                    "A check made with this token answers on a policy that includes the change. "
                    a #check-at-token href=(link("/console/check", &[("principal", &principal), ("scope", &scope), ("at_least", &token)])) {
                        "Check access at this token"
                    }
                }
                (back)
            },
        ),
        Err(refused) => (
            http_status(refused.code()),
            html! {
                p.error role="alert" #write-refused { "Not changed: " (refused.message()) }
                (back)
            },
        ),
    };
    Ok(page(
        status,
        "Role assignments",
        "/console/assignments",
        Some(&caller),
        body,
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RolesQuery {
    role: String,
}

pub async fn roles(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<RolesQuery>,
) -> Page {
    // Role definitions belong to no one scope: any reader may see them.
    let (_, policy, caller, _) = enter_at(&app, &headers, "").await?;
    let snapshot = &policy.snapshot;
    let wanted = non_empty(&q.role).map(|r| snapshot.role(r).map(|role| role.name.clone()));
    let body = html! {
        form.query method="get" action="/console/roles" {
            label { "Role (name or id)" input type="text" name="role" value=(q.role); }
            button type="submit" { "Show" }
            a href="/console/roles" { "All roles" }
        }
        @if let Some(None) = &wanted {
            p.error role="alert" { "No role " code { (q.role) } " in this policy." }
        }
        @for (i, role) in snapshot.roles().iter().enumerate() {
            @if wanted.as_ref().is_none_or(|w| w.as_deref() == Some(&*role.name)) {
                @let v = snapshot.role_view(role);
                section aria-labelledby=(format!("role-{i}")) {
                    h2 #(format!("role-{i}")) { (v.name) }
                    @if let Some(d) = v.description { p { (d) } }
                    table {
                        caption.muted { "Definition of " (v.name) }
                        tbody {
                            tr { th scope="row" { "Id" } td { code { (v.id.unwrap_or("(none)")) } } }
                            tr { th scope="row" { "Actions" } td { (codes(&v.actions)) } }
                            tr { th scope="row" { "Not actions" } td { (codes(&v.not_actions)) } }
                            tr { th scope="row" { "Data actions" } td { (codes(&v.data_actions)) } }
                            tr { th scope="row" { "Not data actions" } td { (codes(&v.not_data_actions)) } }
                            tr { th scope="row" { "Assignable scopes" } td { (codes(&v.assignable_scopes)) } }
                            tr { th scope="row" { "Implied actions" } td { (codes(&v.implied)) } }
                            tr { th scope="row" { "Implied data actions" } td { (codes(&v.implied_data)) } }
                        }
                    }
                    p { a href=(link("/console/assignments", &[("role", v.name)])) { "Assignments of " (v.name) } }
                }
            }
        }
    };
    Ok(page(
        StatusCode::OK,
        "Roles",
        "/console/roles",
        Some(&caller),
        body,
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ScopesQuery {
    scope: String,
}

pub async fn scopes(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<ScopesQuery>,
) -> Page {
    let (_, policy, caller, scope) = enter_at(&app, &headers, &q.scope).await?;
    // The tree and the assignment lists grow with the policy: built in the query pool.
    let body = in_pool(&app, move |_| {
        let snapshot = &policy.snapshot;
        // The part of the tree the caller may read about: the scope, its ancestors and what
        // lies below it, at most TREE_LIMIT entries.
        let ancestors = snapshot.scope_ancestors(&scope);
        let mut tree = snapshot.scope_tree();
        tree.retain(|n| relation(&scope, &ancestors, n.scope).is_some());
        let cut = tree.len().saturating_sub(TREE_LIMIT);
        tree.truncate(TREE_LIMIT);
        let all = snapshot.assignment_views();
        let here: Vec<_> = all
            .iter()
            .filter(|a| relation(&scope, &ancestors, a.scope) == Some("here"))
            .collect();
        let inherited: Vec<_> = all
            .iter()
            .filter(|a| relation(&scope, &ancestors, a.scope) == Some("inherited"))
            .collect();
        let denies = snapshot.deny_views();
        let denies: Vec<_> = denies
            .iter()
            .filter_map(|d| {
                relation(&scope, &ancestors, d.scope)
                    .filter(|r| *r != "below")
                    .map(|r| (d, r))
            })
            .collect();
        let table = |id: &str, caption: &str, rows: &[&crate::policy::browse::AssignmentView<'_>]| {
            html! {
                table #(id) {
                    caption { (caption) " (" (rows.len()) ")" }
                    thead { tr { th scope="col" { "Id" } th scope="col" { "Role" } th scope="col" { "Principal" } th scope="col" { "Scope" } } }
                    tbody {
                        @for a in rows {
                            tr {
                                td { code { (a.id.unwrap_or("(no id)")) } }
                                td { (view::role(a.role)) }
                                td { (view::principal(a.principal)) }
                                td { (view::scope(a.scope)) }
                            }
                        }
                    }
                }
            }
        };
        html! {
            form.query method="get" action="/console/scopes" {
                label { "Scope" input type="text" name="scope" value=(q.scope) placeholder="/"; }
                button type="submit" { "Show" }
            }
            h2 { "At " code { (scope) } }
            (table("assigned-here", "Assigned here", &here))
            (table("inherited", "Inherited from above (path prefixes and scope links)", &inherited))
            table #scope-denies {
                caption { "Deny assignments here and above (" (denies.len()) ")" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Scope" } th scope="col" { "Where" } th scope="col" { "Applies to" } th scope="col" { "Actions" } } }
                tbody {
                    @for (d, rel) in &denies {
                        tr {
                            td { code { (d.name) } }
                            td { (view::scope(d.scope)) }
                            td { (rel) }
                            td { (codes(&d.principals.iter().map(String::as_str).collect::<Vec<_>>())) }
                            td { (codes(&d.actions)) }
                        }
                    }
                }
            }
            h2 { "Scope tree" }
            p.muted { "The scopes the policy names at, above and below " code { (scope) } ". Other parents (scope links) are listed beside a scope." }
            ul.tree #tree {
                @for node in &tree {
                    li class=(format!("depth-{}", node.depth.min(8))) {
                        (view::scope(node.scope))
                        @if !node.linked.is_empty() {
                            " — also under " (codes(&node.linked))
                        }
                    }
                }
            }
            @if cut > 0 {
                p.notice { (cut) " more scopes not shown: choose a scope lower in the tree." }
            }
        }
    })
    .await?;
    Ok(page(
        StatusCode::OK,
        "Scopes",
        "/console/scopes",
        Some(&caller),
        body,
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WhoCanQuery {
    action: String,
    scope: String,
    data: Option<String>,
}

pub async fn who_can(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<WhoCanQuery>,
) -> Page {
    let (_, policy, caller, scope) = enter_at(&app, &headers, &q.scope).await?;
    let data = checked(&q.data);
    let answer = match non_empty(&q.action) {
        Some(action) => {
            let (action, scope) = (action.to_owned(), scope.clone());
            Some(
                in_pool(&app, move |cancel| {
                    let names = |names: Vec<&str>| -> Vec<String> {
                        names.into_iter().map(str::to_owned).collect()
                    };
                    policy
                        .snapshot
                        .who_can_until(&action, data, &scope, syntax::now(), &|| {
                            cancel.is_cancelled()
                        })
                        .map(|w| (names(w.principals), names(w.groups)))
                })
                .await?,
            )
        }
        None => None,
    };
    let status = match &answer {
        Some(Err(_)) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    let action = q.action.trim();
    let body = html! {
        form.query method="get" action="/console/who-can" {
            label { "Action" input type="text" name="action" value=(q.action) placeholder="Microsoft.Edge/targets/delete" required; }
            label { "Scope" input type="text" name="scope" value=(q.scope) placeholder="/"; }
            label.inline { input type="checkbox" name="data" value="on" checked[data]; "Data action" }
            button type="submit" { "Who can" }
        }
        @match &answer {
            Some(Ok((principals, groups))) => {
                p { "Allowed " code { (action) } " at " code { (scope) } " (deny assignments applied; principals judged with their policy groups):" }
                table #who-can {
                    caption { (principals.len()) " principals and " (groups.len()) " groups" }
                    thead { tr { th scope="col" { "Principal or group" } th scope="col" { "Kind" } th scope="col" { "Explain" } } }
                    tbody {
                        @for p in principals.iter().map(|p| (p.as_str(), "principal")).chain(groups.iter().map(|g| (g.as_str(), "group"))) {
                            tr {
                                td { code { (p.0) } }
                                td { (p.1) }
                                td { a href=(link("/console/check", &[("principal", p.0), ("action", action), ("scope", &scope), ("data", if data { "on" } else { "" })])) { "Check access" } }
                            }
                        }
                    }
                }
            }
            Some(Err(e)) => p.error role="alert" { (e.to_string()) },
            None => {}
        }
    };
    Ok(page(
        status,
        "Who can",
        "/console/who-can",
        Some(&caller),
        body,
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WhereCanQuery {
    principal: String,
    action: String,
    under: String,
    data: Option<String>,
}

pub async fn where_can(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<WhereCanQuery>,
) -> Page {
    let (_, policy, caller, under) = enter_at(&app, &headers, &q.under).await?;
    let data = checked(&q.data);
    let answer = match non_empty(&q.principal).zip(non_empty(&q.action)) {
        Some((principal, action)) => {
            let (principal, action, under) =
                (principal.to_owned(), action.to_owned(), under.clone());
            Some(
                in_pool(&app, move |_| {
                    policy.snapshot.plan(&PlanRequest {
                        principal: &principal,
                        groups: &[],
                        action: &action,
                        data_action: data,
                        under: &under,
                        at: syntax::now(),
                    })
                })
                .await?,
            )
        }
        None => None,
    };
    let body = html! {
        form.query method="get" action="/console/where-can" {
            label { "Principal" input type="text" name="principal" value=(q.principal) required; }
            label { "Action" input type="text" name="action" value=(q.action) required; }
            label { "Under scope" input type="text" name="under" value=(q.under) placeholder="/"; }
            label.inline { input type="checkbox" name="data" value="on" checked[data]; "Data action" }
            button type="submit" { "Where can" }
        }
        @match &answer {
            Some(Ok(plan)) => {
                table #plan-include {
                    caption { "Allowed at these scopes and everything below them" }
                    thead { tr { th scope="col" { "Scope" } } }
                    tbody { @for s in &plan.include { tr { td { (view::scope(s)) } } } }
                }
                table #plan-exclude {
                    caption { "Except at these scopes and everything below them" }
                    thead { tr { th scope="col" { "Scope" } } }
                    tbody { @for s in &plan.exclude { tr { td { (view::scope(s)) } } } }
                }
            }
            Some(Err(e)) => p.error role="alert" { (e.to_string()) },
            None => {}
        }
    };
    Ok(page(
        StatusCode::OK,
        "Where can",
        "/console/where-can",
        Some(&caller),
        body,
    ))
}

fn decision_rows(id: &str, items: &[Arc<FeedItem>]) -> Markup {
    html! {
        tbody #(id) {
            @if items.is_empty() {
                tr.empty { td colspan="8" { "None yet." } }
            }
            @for item in items {
                tr {
                    td { (item.time) }
                    td { a href=(link("/console/check", &[("decision", &item.decision_id)])) { (item.decision_id) } }
                    td { @if let Some(p) = &item.principal { code { (p) } } }
                    td { @if let Some(a) = &item.action { code { (a) } } }
                    td { @if let Some(s) = &item.scope { code { (s) } } }
                    td { (item.reason) @if item.shadow { " (shadow)" } }
                    td { @if let Some(d) = &item.detail { code { (d) } } }
                    td { (item.api) }
                }
            }
        }
    }
}

fn decision_head() -> Markup {
    html! {
        thead { tr {
            th scope="col" { "Time" } th scope="col" { "Decision id" } th scope="col" { "Principal" }
            th scope="col" { "Action" } th scope="col" { "Scope" } th scope="col" { "Reason" }
            th scope="col" { "Role or deny assignment" } th scope="col" { "API" }
        } }
    }
}

pub async fn decisions(State(app): State<Arc<App>>, headers: HeaderMap) -> Page {
    let (console, _, caller) = enter(&app, &headers, "/").await?;
    let (denies, allows) = console.feed.recent();
    let body = html! {
        div data-events="/console/decisions/events" data-limit=(RECENT) {
            p #live-status role="status" aria-live="polite" {
                "Showing the decisions kept when the page loaded. Live updates need JavaScript."
            }
            table #denies {
                caption { "Denies (" span #denies-count { (denies.len()) } ", newest first)" }
                (decision_head())
                (decision_rows("denies-body", &denies))
            }
            table #allows {
                caption { "Allows (" span #allows-count { (allows.len()) } ", newest first)" }
                (decision_head())
                (decision_rows("allows-body", &allows))
            }
        }
    };
    Ok(page(
        StatusCode::OK,
        "Recent decisions",
        "/console/decisions",
        Some(&caller),
        body,
    ))
}

/// Server-sent events: each decision as one `decision` event with JSON data. Ends when the
/// server starts draining, and when the caller may no longer watch: its identity and its
/// read access at `/` are judged again, on the policy serving then, whenever the policy
/// changes and at least every [`REAUTHORIZE`] (a token or an assignment may expire). A
/// watcher that lags skips what it missed.
pub async fn events(State(app): State<Arc<App>>, headers: HeaderMap) -> Page {
    let (console, policy, _) = enter(&app, &headers, "/").await?;
    // Each stream holds a connection and a subscription for as long as it lasts: bounded.
    let Ok(slot) = console.watchers.clone().try_acquire_owned() else {
        let mut refused = refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many live watchers",
            html! {
                "The console already streams decisions to " (super::MAX_WATCHERS)
                " watchers, its most. Reload Recent decisions later; it shows the kept \
                 decisions without live updates."
            },
        )
        .into_response();
        refused.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("30"),
        );
        return Ok(refused);
    };
    let watch = Watch {
        _slot: slot,
        rx: console.feed.subscribe(),
        app: app.clone(),
        headers,
        generation: policy.generation,
        judged: tokio::time::Instant::now(),
    };
    drop(policy);
    let stream = futures_util::stream::unfold(watch, |mut w| async move {
        loop {
            if w.app.draining.load(Ordering::Relaxed) {
                return None;
            }
            let item = match tokio::time::timeout(Duration::from_secs(1), w.rx.recv()).await {
                Err(_) => None,
                Ok(Ok(item)) => Some(item),
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
            };
            // Nothing is sent to a caller whose access has ended.
            if !w.still_allowed().await {
                return None;
            }
            if let Some(item) = item {
                let data = serde_json::to_string(&*item).unwrap_or_default();
                let event = Event::default()
                    .event("decision")
                    .id(item.decision_id.clone())
                    .data(data);
                return Some((Ok::<_, std::convert::Infallible>(event), w));
            }
        }
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// How long a watcher's access is trusted before it is judged again (sooner when the
/// policy changes).
pub const REAUTHORIZE: Duration = Duration::from_secs(1);

/// One watcher of the decision stream: its request headers (to identify it again), and
/// when and on which policy it was last judged.
struct Watch {
    /// Its place among the [`super::MAX_WATCHERS`], given back when the stream ends.
    _slot: tokio::sync::OwnedSemaphorePermit,
    rx: tokio::sync::broadcast::Receiver<Arc<FeedItem>>,
    app: Arc<App>,
    headers: HeaderMap,
    generation: u64,
    judged: tokio::time::Instant,
}

impl Watch {
    /// Whether the watcher may still read at `/`: judged again when the policy changed
    /// or [`REAUTHORIZE`] has passed, with the identity sources and the policy serving now.
    async fn still_allowed(&mut self) -> bool {
        let Some(policy) = self.app.policy.current() else {
            return false;
        };
        if policy.generation == self.generation && self.judged.elapsed() < REAUTHORIZE {
            return true;
        }
        let allowed = match identify(&self.app, &policy.snapshot, &self.headers).await {
            Ok(Some(Identity {
                principal, groups, ..
            })) => {
                let caller = Caller {
                    principal,
                    groups,
                    session: String::new(),
                    new_session: false,
                };
                may_read(&policy.snapshot, &caller, "/") == Ok(true)
            }
            _ => false,
        };
        self.generation = policy.generation;
        self.judged = tokio::time::Instant::now();
        allowed
    }
}

fn time_of(t: SystemTime) -> String {
    let nanos = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
        .unwrap_or(0);
    syntax::format_time(nanos)
}

pub async fn status(State(app): State<Arc<App>>, headers: HeaderMap) -> Page {
    let (console, policy, caller) = enter(&app, &headers, "/").await?;
    let s = &policy.snapshot;
    let c = &s.counts;
    let error = app.policy.last_error();
    let counts = [
        ("Documents", c.documents),
        ("Roles", c.roles),
        ("Role assignments", c.assignments),
        ("Deny assignments", c.deny_assignments),
        ("Groups", c.groups),
        ("Principals", c.principals),
        ("Scopes", c.scopes),
        ("Catalog actions", c.catalog_actions),
        ("Routes", c.routes),
    ];
    let (denies, allows) = console.feed.recent();
    let body = html! {
        dl.facts #policy {
            dt { "Revision" } dd { code #revision { (s.revision) } }
            dt { "Loaded at" } dd { (time_of(policy.loaded_at)) }
            dt { "Generation" } dd { (policy.generation) " (policies installed since start)" }
            dt { "Role-assignment store" }
            dd #store {
                @match app.store.get() {
                    None => "none: role assignments come from the policy sources only",
                    Some(store) => {
                        @let latest = store.inputs().revision;
                        @let answers = store.through();
                        "etcd, prefix " code { (store.options.prefix) } "; the policy answers at store revision "
                        code #store-revision { (answers) } " (consistency token " code { (crate::store::token(answers)) } ")"
                        "; latest revision read " code #store-latest { (latest) } ". "
                        span #store-staleness {
                            @if answers >= latest { "Up to date with what was read." }
                            @else { "Stale: " (latest - answers) " revisions behind what was read (a change was rejected; see the last reload error)." }
                        }
                        " "
                        span #store-contact {
                            @if store.reachable() { "etcd answers" } @else { span.tag.deny { "etcd does not answer" } }
                            "; last contact "
                            @match store.seconds_since_contact() {
                                Some(s) => { (format!("{s:.1}")) " s ago." }
                                None => "never.",
                            }
                        }
                    }
                }
            }
            dt { "Last reload error" }
            dd #last-error {
                @match &error {
                    Some(e) => { span.tag.deny { "rejected" } " at " (time_of(e.at)) ": " code { (e.message) } " — the revision above keeps serving." }
                    None => "none",
                }
            }
            dt { "Decisions kept for the console" } dd { (denies.len()) " denies, " (allows.len()) " allows" }
        }
        h2 { "Sources" }
        ol #sources { @for src in &s.sources { li { code { (src) } } } }
        h2 { "Counts" }
        table #counts {
            caption { "What the policy holds" }
            thead { tr { th scope="col" { "Kind" } th scope="col" { "Count" } } }
            tbody { @for (k, n) in counts { tr { th scope="row" { (k) } td { (n) } } } }
        }
    };
    Ok(page(
        StatusCode::OK,
        "Policy status",
        "/console/status",
        Some(&caller),
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::{NotATime, form_time};

    #[test]
    fn a_form_time_is_read_as_utc_or_refused_naming_its_field() {
        assert_eq!(form_time("Not before", " "), Ok(String::new()));
        assert_eq!(
            form_time("Not before", "2027-01-01T08:00"),
            Ok("2027-01-01T08:00:00Z".to_owned())
        );
        let e = form_time("Not after", "<b>1</b>").unwrap_err();
        assert_eq!(
            e,
            NotATime {
                field: "Not after",
                text: "<b>1</b>".to_owned()
            }
        );
        assert!(
            e.to_string().starts_with("Not after `<b>1</b>` is not a time: write it in RFC 3339, such as 2027-01-01T00:00:00Z (a date and time"),
            "{e}"
        );
    }
}
