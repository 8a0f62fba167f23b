//! `iot-authz admin ...` (a client of the Admin API, SPEC §9) and `iot-authz store
//! import|export` (policy documents to and from the etcd store).
//!
//! Exit codes: 0 done; 1 refused by the server (permission, a rule of the policy, not
//! found, already exists); 2 an error (bad arguments, server or store unreachable).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::cli::{EXIT_DENY, EXIT_ERROR, EXIT_OK};
use crate::policy::document::{Document, RoleDoc};
use crate::policy::source;
use crate::proto::iotauthz::v1 as pb;
use crate::proto::iotauthz::v1::admin_client::AdminClient;
use crate::store::objects::{self, Object};
use crate::store::{self as store_mod, Etcd, EtcdAuth, EtcdTls, etcd};

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The server's gRPC URL (`http://host:50051`, or `https://` with `--ca`).
    #[arg(
        long,
        env = "IOT_AUTHZ_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// PEM bundle of the certificate authorities that sign the server's certificate.
    #[arg(long, env = "IOT_AUTHZ_SERVER_CA")]
    pub ca: Option<PathBuf>,
    /// The principal to act as, sent as the `x-iotauthz-principal` metadata (the default
    /// identity source; only safe where a proxy sets it).
    #[arg(long = "as", env = "IOT_AUTHZ_ACTOR", value_name = "PRINCIPAL")]
    pub actor: Option<String>,
    /// Extra call metadata, `NAME:VALUE` (repeatable), for other header identity sources.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// Machine-readable JSON output.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Grant a role at a scope (CreateRoleAssignment).
    Assign {
        #[arg(long)]
        principal: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        scope: String,
        /// The assignment's id; generated when absent.
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        not_before: Option<String>,
        #[arg(long)]
        not_after: Option<String>,
    },
    /// Revoke an assignment by id (DeleteRoleAssignment).
    Unassign { id: String },
    /// List the store's assignments (ListRoleAssignments), every page.
    List {
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        role: Option<String>,
        /// At this scope or below.
        #[arg(long)]
        scope: Option<String>,
        /// Answer from a state at least as new as this consistency token.
        #[arg(long)]
        at_least: Option<String>,
    },
    /// Create or replace a role definition from a JSON or YAML file holding one role.
    PutRole { file: PathBuf },
    /// Delete a role definition of the store by id (or name, for a role without an id).
    DeleteRole { id: String },
    /// Create or replace a group.
    PutGroup {
        #[arg(long)]
        id: String,
        #[arg(long = "member")]
        members: Vec<String>,
    },
    /// Delete a group of the store.
    DeleteGroup { id: String },
}

/// Where the etcd store is and how to reach it: the flags `serve` and `store` share.
#[derive(Debug, Clone, Args)]
pub struct EtcdArgs {
    /// etcd endpoints of the store (SPEC §9), comma-separated or repeated
    /// (`http://127.0.0.1:2379`; `https://` with the TLS options below). Without it,
    /// `serve` has no store.
    #[arg(
        long,
        env = "IOT_AUTHZ_ETCD_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of the store's objects.
    #[arg(long, env = "IOT_AUTHZ_ETCD_PREFIX", default_value = store_mod::DEFAULT_PREFIX)]
    pub etcd_prefix: String,
    /// PEM bundle of the certificate authorities that sign etcd's certificate.
    #[arg(long, env = "IOT_AUTHZ_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate for etcd (with `--etcd-key`).
    #[arg(long, env = "IOT_AUTHZ_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM private key of `--etcd-cert`.
    #[arg(long, env = "IOT_AUTHZ_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user, for etcd's user/password authentication; the password comes from
    /// `--etcd-password-file` or the environment variable `IOT_AUTHZ_ETCD_PASSWORD` (never
    /// a command-line value, which `ps` would show).
    #[arg(long, env = "IOT_AUTHZ_ETCD_USERNAME")]
    pub etcd_username: Option<String>,
    /// File holding the password of `--etcd-username` (read at each authentication, so a
    /// rotated password is picked up; a trailing line break is ignored).
    #[arg(long, env = "IOT_AUTHZ_ETCD_PASSWORD_FILE", requires = "etcd_username")]
    pub etcd_password_file: Option<PathBuf>,
}

/// Why the etcd flags do not make a store configuration.
#[derive(Debug, thiserror::Error)]
pub enum EtcdArgsError {
    /// A TLS file (`--etcd-ca`, `--etcd-cert`, `--etcd-key`) cannot be read.
    #[error("reading {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("--etcd-username is empty")]
    EmptyUsername,
    #[error(
        "--etcd-username needs a password: --etcd-password-file FILE or the environment variable {ETCD_PASSWORD_ENV}"
    )]
    NoPassword,
    /// The password file cannot be read.
    #[error(transparent)]
    Password(#[from] store_mod::PasswordError),
}

/// The environment variable that may hold the password of `--etcd-username`.
pub const ETCD_PASSWORD_ENV: &str = "IOT_AUTHZ_ETCD_PASSWORD";

impl EtcdArgs {
    /// The store's options (`None` without an endpoint); a TLS file that cannot be read
    /// is an error.
    pub fn options(&self) -> std::result::Result<Option<store_mod::StoreOptions>, EtcdArgsError> {
        let endpoints: Vec<String> = self
            .etcd_endpoints
            .iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Ok(None);
        }
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|error| EtcdArgsError::Read {
                path: p.clone(),
                error,
            })
        };
        let mut options = store_mod::StoreOptions::new(endpoints);
        options.prefix = self.etcd_prefix.clone();
        if self.etcd_ca.is_some() || self.etcd_cert.is_some() {
            options.tls = Some(EtcdTls {
                ca: self.etcd_ca.as_ref().map(read).transpose()?,
                identity: match (&self.etcd_cert, &self.etcd_key) {
                    (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                    _ => None,
                },
            });
        }
        options.auth = self.auth()?;
        Ok(Some(options))
    }

    /// The user and password source of `--etcd-username`; the password file is read once
    /// now, so that a missing one stops the command at once.
    fn auth(&self) -> std::result::Result<Option<EtcdAuth>, EtcdArgsError> {
        let Some(username) = &self.etcd_username else {
            return Ok(None);
        };
        if username.trim().is_empty() {
            return Err(EtcdArgsError::EmptyUsername);
        }
        let password = match (&self.etcd_password_file, std::env::var(ETCD_PASSWORD_ENV)) {
            (Some(path), _) => store_mod::Password::File(path.clone()),
            (None, Ok(value)) => store_mod::Password::Value(value.into()),
            (None, Err(_)) => return Err(EtcdArgsError::NoPassword),
        };
        password.read().map_err(EtcdArgsError::Password)?;
        Ok(Some(EtcdAuth {
            username: username.clone(),
            password,
        }))
    }
}

#[derive(Debug, Args)]
#[command(mut_arg("etcd_endpoints", |a| a.required(true)))]
pub struct StoreArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy the assignments, roles, groups and deny assignments of policy files into the
    /// store (the other sections stay in files). Refuses keys that exist with another
    /// value, unless `--overwrite`.
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long)]
        overwrite: bool,
        /// Largest input accepted, in bytes (all files together).
        #[arg(long, default_value_t = source::DEFAULT_MAX_POLICY_BYTES)]
        max_bytes: u64,
    },
    /// Print the store's objects as one policy document (JSON), to keep in files.
    Export,
}

type Result<T> = std::result::Result<T, (u8, String)>;

fn error(message: impl Into<String>) -> (u8, String) {
    (EXIT_ERROR, message.into())
}

fn out(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| error(format!("starting the runtime: {e}")))
}

/// Runs `iot-authz admin ...`.
pub fn admin(args: &AdminArgs) -> u8 {
    crate::install_crypto_provider();
    finish(runtime().and_then(|rt| rt.block_on(admin_async(args))))
}

/// Runs `iot-authz store ...`.
pub fn store(args: &StoreArgs) -> u8 {
    crate::install_crypto_provider();
    finish(runtime().and_then(|rt| rt.block_on(store_async(args))))
}

fn finish(result: Result<()>) -> u8 {
    match result {
        Ok(()) => EXIT_OK,
        Err((code, message)) => {
            eprintln!("error: {message}");
            code
        }
    }
}

/// A refusal by the server is exit 1; anything else exit 2.
fn status(s: tonic::Status) -> (u8, String) {
    let code = match s.code() {
        Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::AlreadyExists
        | Code::Unauthenticated => EXIT_DENY,
        _ => EXIT_ERROR,
    };
    (code, format!("{:?}: {}", s.code(), s.message()))
}

impl AdminArgs {
    fn request<T>(&self, message: T) -> Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(message);
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(actor) = &self.actor {
            pairs.push(("x-iotauthz-principal".into(), actor.clone()));
        }
        for h in &self.headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| error(format!("--header `{h}` is not NAME:VALUE")))?;
            pairs.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        for (name, value) in pairs {
            let key = tonic::metadata::MetadataKey::from_bytes(name.as_bytes())
                .map_err(|_| error(format!("`{name}` is not a metadata name")))?;
            let value = value
                .parse()
                .map_err(|_| error(format!("the value of `{name}` is not valid metadata")))?;
            r.metadata_mut().insert(key, value);
        }
        Ok(r)
    }

    async fn client(&self) -> Result<AdminClient<Channel>> {
        let mut endpoint = Endpoint::from_shared(self.server.clone())
            .map_err(|e| error(format!("--server: {e}")))?;
        if let Some(ca) = &self.ca {
            let pem =
                std::fs::read(ca).map_err(|e| error(format!("reading {}: {e}", ca.display())))?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .map_err(|e| error(format!("TLS: {e}")))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| error(format!("connecting to {}: {e}", self.server)))?;
        Ok(AdminClient::new(channel))
    }

    fn written(&self, token: &str, what: &str) {
        if self.json {
            out(&json!({"token": token}).to_string());
        } else {
            out(&format!("{what} (token {token})"));
        }
    }
}

async fn admin_async(args: &AdminArgs) -> Result<()> {
    let mut c = args.client().await?;
    match &args.command {
        AdminCommand::Assign {
            principal,
            role,
            scope,
            id,
            not_before,
            not_after,
        } => {
            let r = c
                .create_role_assignment(args.request(pb::CreateRoleAssignmentRequest {
                    assignment: Some(pb::RoleAssignment {
                        id: id.clone().unwrap_or_default(),
                        principal: principal.clone(),
                        role: role.clone(),
                        scope: scope.clone(),
                        not_before: not_before.clone().unwrap_or_default(),
                        not_after: not_after.clone().unwrap_or_default(),
                    }),
                })?)
                .await
                .map_err(status)?
                .into_inner();
            let a = r.assignment.unwrap_or_default();
            if args.json {
                out(&json!({"assignment": assignment_json(&a), "token": r.token}).to_string());
            } else {
                out(&format!(
                    "assigned {} to {} at {}: id {} (token {})",
                    a.role, a.principal, a.scope, a.id, r.token
                ));
            }
        }
        AdminCommand::Unassign { id } => {
            let r = c
                .delete_role_assignment(
                    args.request(pb::DeleteRoleAssignmentRequest { id: id.clone() })?,
                )
                .await
                .map_err(status)?
                .into_inner();
            args.written(&r.token, &format!("unassigned {id}"));
        }
        AdminCommand::List {
            principal,
            role,
            scope,
            at_least,
        } => {
            let mut all = Vec::new();
            let mut page_token = String::new();
            let mut at = at_least.clone().unwrap_or_default();
            loop {
                let r = c
                    .list_role_assignments(args.request(pb::ListRoleAssignmentsRequest {
                        principal: principal.clone().unwrap_or_default(),
                        role: role.clone().unwrap_or_default(),
                        scope: scope.clone().unwrap_or_default(),
                        page_size: 1000,
                        page_token: page_token.clone(),
                        at_least: at.clone(),
                    })?)
                    .await
                    .map_err(status)?
                    .into_inner();
                all.extend(r.assignments);
                // Later pages are read at least at the first page's state.
                at = r.token;
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            if args.json {
                out(&json!({
                    "assignments": all.iter().map(assignment_json).collect::<Vec<_>>(),
                    "token": at,
                })
                .to_string());
            } else {
                for a in &all {
                    out(&format!(
                        "{}\t{}\t{}\t{}",
                        a.id, a.principal, a.role, a.scope
                    ));
                }
            }
        }
        AdminCommand::PutRole { file } => {
            let role = read_role(file)?;
            let r = c
                .put_role_definition(args.request(pb::PutRoleDefinitionRequest {
                    role: Some(pb::RoleDefinition {
                        name: role.name.clone(),
                        id: role.id.clone().unwrap_or_default(),
                        description: role.description.clone().unwrap_or_default(),
                        actions: role.actions.clone(),
                        not_actions: role.not_actions.clone(),
                        data_actions: role.data_actions.clone(),
                        not_data_actions: role.not_data_actions.clone(),
                        assignable_scopes: role.assignable_scopes.clone().unwrap_or_default(),
                    }),
                })?)
                .await
                .map_err(status)?
                .into_inner();
            args.written(&r.token, &format!("role {} written", role.name));
        }
        AdminCommand::DeleteRole { id } => {
            let r = c
                .delete_role_definition(
                    args.request(pb::DeleteRoleDefinitionRequest { id: id.clone() })?,
                )
                .await
                .map_err(status)?
                .into_inner();
            args.written(&r.token, &format!("role {id} deleted"));
        }
        AdminCommand::PutGroup { id, members } => {
            let r = c
                .put_group(args.request(pb::PutGroupRequest {
                    group: Some(pb::Group {
                        id: id.clone(),
                        members: members.clone(),
                    }),
                })?)
                .await
                .map_err(status)?
                .into_inner();
            args.written(&r.token, &format!("group {id} written"));
        }
        AdminCommand::DeleteGroup { id } => {
            let r = c
                .delete_group(args.request(pb::DeleteGroupRequest { id: id.clone() })?)
                .await
                .map_err(status)?
                .into_inner();
            args.written(&r.token, &format!("group {id} deleted"));
        }
    }
    Ok(())
}

fn assignment_json(a: &pb::RoleAssignment) -> serde_json::Value {
    let mut v = json!({"id": a.id, "principal": a.principal, "role": a.role, "scope": a.scope});
    if !a.not_before.is_empty() {
        v["notBefore"] = json!(a.not_before);
    }
    if !a.not_after.is_empty() {
        v["notAfter"] = json!(a.not_after);
    }
    v
}

/// Why a role file is not one role definition: the parser's reason.
#[derive(Debug, thiserror::Error)]
enum RoleFileError {
    #[error("{0}")]
    Json(serde_json::Error),
    #[error("{0}")]
    Yaml(serde_saphyr::Error),
}

/// One role definition from a JSON or YAML file (by its extension; YAML otherwise).
fn read_role(file: &PathBuf) -> Result<RoleDoc> {
    let bytes =
        std::fs::read(file).map_err(|e| error(format!("reading {}: {e}", file.display())))?;
    let text =
        String::from_utf8(bytes).map_err(|_| error(format!("{} is not UTF-8", file.display())))?;
    let parsed: std::result::Result<RoleDoc, RoleFileError> = if file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        serde_json::from_str(&text).map_err(RoleFileError::Json)
    } else {
        serde_saphyr::from_str(&text).map_err(RoleFileError::Yaml)
    };
    parsed.map_err(|e| error(format!("{}: not one role definition: {e}", file.display())))
}

impl StoreArgs {
    fn connect(&self) -> Result<Etcd> {
        let options = self
            .etcd
            .options()
            .map_err(|e| error(e.to_string()))?
            .ok_or_else(|| error("no etcd endpoint given"))?;
        Etcd::connect(&options.endpoints, options.tls.as_ref())
            .map(|etcd| etcd.with_auth(options.auth.clone()))
            .map_err(|e| error(e.to_string()))
    }
}

/// How many operations one transaction carries (etcd's default `--max-txn-ops` is 128).
const TXN_OPS: usize = 100;

async fn store_async(args: &StoreArgs) -> Result<()> {
    let etcd = args.connect()?;
    let prefix = args.etcd.etcd_prefix.as_bytes();
    let unreachable = |s: tonic::Status| {
        error(format!(
            "the store could not be read: {}",
            store_mod::follow::status_text(&s)
        ))
    };
    match &args.command {
        StoreCommand::Export => {
            let (pairs, revision) = etcd.range_prefix(prefix).await.map_err(unreachable)?;
            let mut objects = objects::Objects::new();
            for kv in pairs {
                let rel = &kv.key[prefix.len().min(kv.key.len())..];
                match objects::decode(rel, &kv.value, usize::MAX) {
                    Ok(Some(o)) => {
                        objects.insert(String::from_utf8_lossy(rel).into_owned(), Ok(o));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return Err(error(format!(
                            "key `{}`: {e}",
                            crate::policy::syntax::escape(&String::from_utf8_lossy(&kv.key))
                        )));
                    }
                }
            }
            let doc = objects::document(&objects).map_err(|_| error("undecodable objects"))?;
            let text = serde_json::to_string_pretty(&doc).map_err(|e| error(e.to_string()))?;
            out(&text);
            eprintln!(
                "exported {} objects at store revision {revision}",
                objects.len()
            );
        }
        StoreCommand::Import {
            paths,
            overwrite,
            max_bytes,
        } => {
            let sources =
                source::read_paths(paths, *max_bytes).map_err(|e| error(e.to_string()))?;
            let mut wanted: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            let mut left_in_files = false;
            for s in &sources {
                let doc = s.parse().map_err(|p| error(p.to_string()))?;
                left_in_files |= !doc.actions.is_empty()
                    || !doc.scope_links.is_empty()
                    || !doc.constraints.is_empty()
                    || !doc.routes.is_empty()
                    || doc.identity.is_some();
                for object in document_objects(doc) {
                    let Some(key) = object.key() else { continue };
                    if wanted.insert(key.clone(), object.to_json()).is_some() {
                        return Err(error(format!(
                            "`{}` is defined twice in the files",
                            crate::policy::syntax::escape(&key)
                        )));
                    }
                }
            }
            if left_in_files {
                eprintln!(
                    "note: actions, scopeLinks, constraints, routes and identity are not store objects; they stay in the files"
                );
            }
            let (existing, _) = etcd.range_prefix(prefix).await.map_err(unreachable)?;
            let existing: BTreeMap<Vec<u8>, Vec<u8>> =
                existing.into_iter().map(|kv| (kv.key, kv.value)).collect();
            let mut conflicts = Vec::new();
            let mut puts = Vec::new();
            for (key, value) in &wanted {
                let full = [prefix, key.as_bytes()].concat();
                match existing.get(&full) {
                    Some(old) if old == value => {}
                    Some(_) if !overwrite => conflicts.push(key.clone()),
                    _ => puts.push((full, value.clone())),
                }
            }
            if !conflicts.is_empty() {
                return Err((
                    EXIT_DENY,
                    format!(
                        "{} keys exist with other values (use --overwrite): {}",
                        conflicts.len(),
                        conflicts.join(", ")
                    ),
                ));
            }
            let count = puts.len();
            let mut last = 0;
            for chunk in puts.chunks(TXN_OPS) {
                let ops = chunk
                    .iter()
                    .map(|(k, v)| etcd::put(k.clone(), v.clone()))
                    .collect();
                let (_, revision) = etcd.txn(Vec::new(), ops).await.map_err(|s| {
                    error(format!(
                        "the store could not be written: {}",
                        store_mod::follow::status_text(&s)
                    ))
                })?;
                last = revision;
            }
            out(&format!(
                "imported {count} objects ({} unchanged){}",
                wanted.len() - count,
                if count > 0 {
                    format!(" (token {})", store_mod::token(last))
                } else {
                    String::new()
                }
            ));
        }
    }
    Ok(())
}

/// The store objects of a document; assignments without an id get one derived from what
/// they grant, so that importing the same files twice writes the same keys.
fn document_objects(doc: Document) -> Vec<Object> {
    let mut out = Vec::new();
    for mut a in doc.assignments {
        if a.id.is_none() {
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(format!("{}\n{}\n{}", a.principal, a.role, a.scope));
            a.id = Some(format!(
                "imported-{}",
                digest
                    .iter()
                    .take(8)
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ));
        }
        out.push(Object::Assignment(a));
    }
    out.extend(doc.roles.into_iter().map(Object::Role));
    out.extend(doc.groups.into_iter().map(Object::Group));
    out.extend(doc.deny_assignments.into_iter().map(Object::DenyAssignment));
    out
}

#[cfg(test)]
mod tests {
    use super::{EtcdArgs, EtcdArgsError};
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        etcd: EtcdArgs,
    }

    fn options(flags: &[&str]) -> Result<(), EtcdArgsError> {
        let flags = Flags::try_parse_from(std::iter::once("t").chain(flags.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"));
        flags.etcd.options().map(|_| ())
    }

    /// Each flag mistake is its own kind, with the message the command prints.
    #[test]
    fn etcd_flag_mistakes_are_refused_by_kind() {
        const ENDPOINT: &str = "--etcd-endpoints=http://127.0.0.1:1";
        assert!(options(&[]).is_ok());
        let e = options(&[ENDPOINT, "--etcd-username", " "]).unwrap_err();
        assert!(matches!(e, EtcdArgsError::EmptyUsername), "{e:?}");
        assert_eq!(e.to_string(), "--etcd-username is empty");
        let missing = "/nonexistent/iot-authz-test/ca.pem";
        let e = options(&[ENDPOINT, "--etcd-ca", missing]).unwrap_err();
        assert!(
            matches!(&e, EtcdArgsError::Read { path, .. } if path.to_str() == Some(missing)),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with(&format!("reading {missing}: ")),
            "{e}"
        );
        let e = options(&[
            ENDPOINT,
            "--etcd-username",
            "u",
            "--etcd-password-file",
            "/nonexistent/iot-authz-test/password",
        ])
        .unwrap_err();
        assert!(
            matches!(&e, EtcdArgsError::Password(p)
                if p.path == std::path::Path::new("/nonexistent/iot-authz-test/password")
                    && p.error.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with(
                "reading the etcd password file `/nonexistent/iot-authz-test/password`: "
            ),
            "{e}"
        );
    }
}
