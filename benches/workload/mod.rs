//! Deterministic synthetic policies and requests for benchmarks.
//!
//! [`Workload::new`] builds an Azure-like model from a [`Size`] and a seed with its own
//! splitmix64 generator (no `rand` dependency), so the same size and seed always give the
//! same policy and the same requests, on every machine. The model is engine-neutral
//! (indices, not documents): [`Workload::documents`] renders it as iot-authz
//! [`Document`]s, and a benchmark against another engine can render the same model in that
//! engine's terms.
//!
//! Shape at the issue's size (100,000 principals, 1,000,000 assignments, 10,000 scopes,
//! 200 roles):
//!
//! - **Scopes**: `/`, 10 subscriptions `/subscriptions/s{i}`, 100 resource groups
//!   `.../resourceGroups/rg{j}`, 9,869 targets `.../providers/Microsoft.Edge/targets/t{k}`
//!   and 20 service groups `/providers/Microsoft.Management/serviceGroups/sg{n}`; one target
//!   in a hundred is linked (`scopeLinks`) to a service group.
//! - **Principals**: 84,000 users, 10,000 devices, 1,000 service principals and 5,000
//!   groups in three tiers (top, middle, leaf; a group is nested at most three deep). Most
//!   users are in one to three groups, half the devices in one.
//! - **Roles**: 10 built-in-like roles (`*`, `*/read`, `Microsoft.Edge/*`,
//!   `Microsoft.Edge/targets/*`, literals, notActions, dataActions) plus custom roles that
//!   mix a wildcard, literals, notActions and data actions; one custom role in ten is
//!   assignable only within one subscription. A catalog of about 60 actions, where every
//!   `write`, `delete` and `action` implies the matching `read`.
//! - **Assignments**: a fifth to groups, the rest to users, devices and service
//!   principals; 75% at a target, 20% at a resource group, 4% at a subscription, 1% at a
//!   service group and a handful at `/`; 3% time-bounded (expired, active or future at
//!   [`AT`]); GUID ids; role named by name (70%) or id (30%).
//! - A few deny assignments (`TYPE:*`, `*` with exclusions, one group; control and data
//!   actions) and one `minAssignments` constraint.
//!
//! [`Workload::requests`] draws checks at target scopes for principals that exist: half
//! are built to be allowed (an action the role of one of the principal's active
//! assignments grants, at a target under that assignment's scope), half are random
//! (mostly denied).

// Parts of this API serve later benchmarks (other engines, other sizes), not this one.
#![allow(dead_code)]

use iot_authz::policy::document::{
    AssignmentDoc, CatalogActionDoc, ConstraintDoc, DenyAssignmentDoc, Document, GroupDoc,
    MinAssignmentsDoc, RoleDoc, ScopeLinkDoc,
};

/// The evaluation time of every request, and the reference point of time-bounded grants.
pub const AT: &str = "2026-06-01T00:00:00Z";

/// The default seed.
pub const SEED: u64 = 0x1074_a07f_2026_0001;

/// splitmix64: tiny, fast, and good enough for synthetic data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }

    /// An index drawn with the given relative weights.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut x = self.below(total as usize) as u64;
        for (i, &w) in weights.iter().enumerate() {
            if x < u64::from(w) {
                return i;
            }
            x -= u64::from(w);
        }
        weights.len().saturating_sub(1)
    }

    fn guid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }
}

/// How big a workload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Users, devices, service principals and groups together.
    pub principals: usize,
    pub assignments: usize,
    /// Root, subscriptions, resource groups, targets and service groups together.
    pub scopes: usize,
    pub roles: usize,
}

impl Size {
    /// The issue's size: 100,000 principals, 1,000,000 assignments, 10,000 scopes, 200 roles.
    pub const ISSUE: Self = Self {
        principals: 100_000,
        assignments: 1_000_000,
        scopes: 10_000,
        roles: 200,
    };

    /// The issue's proportions (10 assignments per principal, 100 per scope, 200 roles)
    /// scaled to a number of assignments.
    pub fn with_assignments(assignments: usize) -> Self {
        Self {
            principals: (assignments / 10).max(100),
            assignments,
            scopes: (assignments / 100).max(40),
            roles: 200,
        }
    }

    /// A short label: `1M`, `100k`, `2.5M`, `12345`.
    pub fn label(&self) -> String {
        label(self.assignments)
    }
}

/// `1000000` → `1M`, `10000` → `10k`, `2500000` → `2.5M`; other numbers as they are.
pub fn label(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(100_000) {
        let tenths = n / 100_000;
        if tenths.is_multiple_of(10) {
            format!("{}M", tenths / 10)
        } else {
            format!("{}.{}M", tenths / 10, tenths % 10)
        }
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// A node of the scope tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeRef {
    Root,
    ServiceGroup(u32),
    Subscription(u32),
    ResourceGroup(u32),
    Target(u32),
}

/// The scope tree: resource group `j` is in subscription `j % subscriptions`, target `k` in
/// resource group `k % resource_groups`.
#[derive(Debug, Clone)]
pub struct Scopes {
    pub subscriptions: usize,
    pub resource_groups: usize,
    pub targets: usize,
    pub service_groups: usize,
    /// `(target, service groups)`: extra parents of some targets.
    pub links: Vec<(u32, Vec<u32>)>,
    /// For each service group, the targets linked to it.
    pub service_group_targets: Vec<Vec<u32>>,
}

impl Scopes {
    fn new(total: usize) -> Self {
        let total = total.max(40);
        let subscriptions = (total / 1_000).max(1);
        let resource_groups = (total / 100).max(subscriptions * 2);
        let service_groups = (total / 500).max(1);
        let targets = total - 1 - subscriptions - resource_groups - service_groups;
        let link_count = (targets / 100).max(service_groups);
        let mut links = Vec::with_capacity(link_count);
        let mut service_group_targets = vec![Vec::new(); service_groups];
        for i in 0..link_count {
            // Spread the linked targets over the tree; every service group gets some.
            let target = ((i * 97 + 13) % targets) as u32;
            let mut parents = vec![(i % service_groups) as u32];
            if i % 10 == 9 && service_groups > 1 {
                parents.push(((i + 1) % service_groups) as u32);
            }
            for &g in &parents {
                service_group_targets[g as usize].push(target);
            }
            links.push((target, parents));
        }
        Self {
            subscriptions,
            resource_groups,
            targets,
            service_groups,
            links,
            service_group_targets,
        }
    }

    pub fn total(&self) -> usize {
        1 + self.subscriptions + self.resource_groups + self.targets + self.service_groups
    }

    pub fn subscription_of_rg(&self, rg: u32) -> u32 {
        rg % self.subscriptions as u32
    }

    pub fn rg_of_target(&self, target: u32) -> u32 {
        target % self.resource_groups as u32
    }

    /// The path of a scope, in the policy's spelling.
    pub fn path(&self, scope: ScopeRef) -> String {
        match scope {
            ScopeRef::Root => "/".to_owned(),
            ScopeRef::ServiceGroup(g) => {
                format!("/providers/Microsoft.Management/serviceGroups/sg{g}")
            }
            ScopeRef::Subscription(s) => format!("/subscriptions/s{s}"),
            ScopeRef::ResourceGroup(rg) => format!(
                "/subscriptions/s{}/resourceGroups/rg{rg}",
                self.subscription_of_rg(rg)
            ),
            ScopeRef::Target(t) => {
                let rg = self.rg_of_target(t);
                format!(
                    "/subscriptions/s{}/resourceGroups/rg{rg}/providers/Microsoft.Edge/targets/t{t}",
                    self.subscription_of_rg(rg)
                )
            }
        }
    }

    fn random_rg_in(&self, rng: &mut Rng, subscription: u32) -> u32 {
        let subs = self.subscriptions;
        let count = (self.resource_groups - subscription as usize).div_ceil(subs);
        subscription + (rng.below(count) * subs) as u32
    }

    fn random_target_in_rg(&self, rng: &mut Rng, rg: u32) -> u32 {
        let rgs = self.resource_groups;
        let count = (self.targets - rg as usize).div_ceil(rgs);
        rg + (rng.below(count) * rgs) as u32
    }

    /// A random target at or below a scope (for a service group: a linked target).
    pub fn random_target_under(&self, rng: &mut Rng, scope: ScopeRef) -> u32 {
        match scope {
            ScopeRef::Root => rng.below(self.targets) as u32,
            ScopeRef::ServiceGroup(g) => {
                let linked = &self.service_group_targets[g as usize];
                linked[rng.below(linked.len())]
            }
            ScopeRef::Subscription(s) => {
                let rg = self.random_rg_in(rng, s);
                self.random_target_in_rg(rng, rg)
            }
            ScopeRef::ResourceGroup(rg) => self.random_target_in_rg(rng, rg),
            ScopeRef::Target(t) => t,
        }
    }
}

/// The kind of a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Device,
    ServicePrincipal,
    Group,
}

/// A role with the vocabulary actions it grants (for drawing allowed requests).
#[derive(Debug, Clone)]
pub struct Role {
    pub doc: RoleDoc,
    /// When set, the role is assignable only within this subscription.
    pub subscription: Option<u32>,
    /// `(action, data)` pairs of the vocabulary that the role grants by its patterns.
    pub grants: Vec<(&'static str, bool)>,
}

/// When a time-bounded assignment is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Always,
    /// Ended before [`AT`].
    Expired,
    /// Active at [`AT`].
    Active,
    /// Starts after [`AT`].
    Future,
}

impl Window {
    fn bounds(self) -> (Option<&'static str>, Option<&'static str>) {
        match self {
            Self::Always => (None, None),
            Self::Expired => (Some("2025-01-01T00:00:00Z"), Some("2026-01-01T00:00:00Z")),
            Self::Active => (Some("2026-01-01T00:00:00Z"), Some("2027-01-01T00:00:00Z")),
            Self::Future => (Some("2026-09-01T00:00:00Z"), None),
        }
    }

    pub fn active_at_reference(self) -> bool {
        matches!(self, Self::Always | Self::Active)
    }
}

/// A role assignment of the model.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub principal: u32,
    pub role: u32,
    pub scope: ScopeRef,
    pub window: Window,
    pub id: String,
    /// Whether the document names the role by id rather than by name.
    pub role_by_id: bool,
}

/// One check: a principal that exists, an action, a target scope, at [`AT`].
#[derive(Debug, Clone)]
pub struct Request {
    pub principal: String,
    /// Token groups (full `group:` ids).
    pub groups: Vec<String>,
    pub action: String,
    pub data_action: bool,
    pub scope: String,
    /// Built to be allowed (it may still be denied by a deny assignment).
    pub built_to_allow: bool,
    /// How many assignments the principal and its groups hold (any scope, any time): the
    /// candidates an engine that indexes assignments by principal alone has to look at.
    pub held: usize,
}

impl Request {
    /// The engine's request, evaluated at `at`.
    pub fn check(
        &self,
        at: iot_authz::policy::syntax::Instant,
    ) -> iot_authz::policy::CheckRequest<'_> {
        iot_authz::policy::CheckRequest {
            principal: &self.principal,
            groups: &self.groups,
            action: &self.action,
            data_action: self.data_action,
            scope: &self.scope,
            at,
        }
    }
}

/// A synthetic policy.
#[derive(Debug, Clone)]
pub struct Workload {
    pub size: Size,
    pub seed: u64,
    pub scopes: Scopes,
    /// Principal ids, by index.
    pub principals: Vec<String>,
    pub kinds: Vec<Kind>,
    /// For each principal, the groups that directly contain it (principal indices).
    pub member_of: Vec<Vec<u32>>,
    pub roles: Vec<Role>,
    pub assignments: Vec<Assignment>,
    pub denies: Vec<DenyAssignmentDoc>,
    /// Indices of the users, devices and service principals (everything but groups).
    pub members: std::ops::Range<usize>,
    /// Indices of the groups.
    pub groups: std::ops::Range<usize>,
}

/// Literal control actions of the vocabulary.
const CONTROL: &[&str] = &[
    "Microsoft.Edge/targets/read",
    "Microsoft.Edge/targets/write",
    "Microsoft.Edge/targets/delete",
    "Microsoft.Edge/targets/deploy/action",
    "Microsoft.Edge/targets/update/action",
    "Microsoft.Edge/targets/solutions/read",
    "Microsoft.Edge/targets/solutions/write",
    "Microsoft.Edge/targets/solutions/delete",
    "Microsoft.Edge/targets/deployments/read",
    "Microsoft.Edge/targets/deployments/write",
    "Microsoft.Edge/targets/deployments/delete",
    "Microsoft.Edge/targets/solutionVersions/read",
    "Microsoft.Edge/targets/solutionVersions/write",
    "Microsoft.Edge/sites/read",
    "Microsoft.Edge/sites/write",
    "Microsoft.Edge/sites/delete",
    "Microsoft.Edge/configurations/read",
    "Microsoft.Edge/configurations/write",
    "Microsoft.Edge/schemas/read",
    "Microsoft.Edge/schemas/write",
    "Microsoft.Edge/contexts/read",
    "Microsoft.Edge/contexts/write",
    "Microsoft.Edge/diagnostics/read",
    "Microsoft.Edge/diagnostics/write",
    "Microsoft.IoTSecurity/alerts/read",
    "Microsoft.IoTSecurity/alerts/write",
    "Microsoft.IoTSecurity/sensors/read",
    "Microsoft.IoTSecurity/sensors/write",
    "Microsoft.IoTSecurity/sensors/delete",
    "Microsoft.IoTSecurity/recommendations/read",
    "Microsoft.IoTSecurity/devices/read",
    "Microsoft.IoTSecurity/sites/read",
    "Microsoft.Security/iotSensors/read",
    "Microsoft.Security/iotSensors/write",
    "Microsoft.Security/alerts/read",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Resources/subscriptions/resourceGroups/write",
    "Microsoft.Resources/deployments/read",
    "Microsoft.Resources/deployments/write",
    "Microsoft.Authorization/roleAssignments/read",
    "Microsoft.Authorization/roleAssignments/write",
    "Microsoft.Authorization/roleAssignments/delete",
    "Microsoft.Authorization/roleDefinitions/read",
    "Microsoft.Authorization/roleDefinitions/write",
    "Microsoft.Insights/alertRules/read",
    "Microsoft.Insights/alertRules/write",
    "Microsoft.Insights/metrics/read",
    "Microsoft.Insights/diagnosticSettings/read",
    "Microsoft.Insights/diagnosticSettings/write",
    "Microsoft.Devices/IotHubs/read",
    "Microsoft.Devices/IotHubs/write",
    "Microsoft.Devices/IotHubs/delete",
];

/// Literal data actions of the vocabulary.
const DATA: &[&str] = &[
    "Microsoft.Edge/targets/devices/telemetry/send",
    "Microsoft.Edge/targets/devices/telemetry/read",
    "Microsoft.Edge/targets/devices/commands/invoke",
    "Microsoft.Edge/targets/devices/twin/read",
    "Microsoft.Edge/targets/devices/twin/write",
    "Microsoft.Devices/IotHubs/devices/read",
    "Microsoft.Devices/IotHubs/devices/write",
];

/// Wildcards for custom roles' `actions`.
const WILDCARDS: &[&str] = &[
    "Microsoft.Edge/*",
    "*/read",
    "Microsoft.Edge/targets/*",
    "Microsoft.Edge/*/read",
    "Microsoft.IoTSecurity/*",
    "Microsoft.Resources/*/read",
    "Microsoft.Insights/*",
    "Microsoft.Edge/targets/solutions/*",
];

/// Patterns for `notActions`. None matches a `read`, so none removes an implied action.
const NOT_ACTIONS: &[&str] = &[
    "Microsoft.Edge/targets/delete",
    "Microsoft.Edge/targets/*/delete",
    "Microsoft.Authorization/*/write",
    "Microsoft.Edge/targets/deploy/action",
    "Microsoft.IoTSecurity/sensors/delete",
    "*/delete",
];

const DATA_WILDCARDS: &[&str] = &[
    "Microsoft.Edge/targets/devices/*",
    "Microsoft.Devices/IotHubs/*",
];

const NOT_DATA_ACTIONS: &[&str] = &["Microsoft.Edge/targets/devices/commands/*"];

/// Built-in-like roles: (name, actions, notActions, dataActions, notDataActions, weight).
type Builtin = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
    u32,
);

const BUILTINS: &[Builtin] = &[
    ("Owner", &["*"], &[], &[], &[], 1),
    (
        "Contributor",
        &["*"],
        &[
            "Microsoft.Authorization/*/write",
            "Microsoft.Authorization/*/delete",
        ],
        &[],
        &[],
        8,
    ),
    ("Reader", &["*/read"], &[], &[], &[], 20),
    (
        "Edge Contributor",
        &[
            "Microsoft.Edge/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ],
        &["Microsoft.Edge/targets/delete"],
        &[],
        &[],
        10,
    ),
    (
        "Edge Target Operator",
        &["Microsoft.Edge/targets/*", "*/read"],
        &[
            "Microsoft.Edge/targets/*/delete",
            "Microsoft.Edge/targets/delete",
        ],
        &[],
        &[],
        15,
    ),
    (
        "Edge Solution Deployer",
        &[
            "Microsoft.Edge/targets/deploy/action",
            "Microsoft.Edge/targets/solutions/write",
            "Microsoft.Edge/targets/deployments/write",
        ],
        &[],
        &[],
        &[],
        8,
    ),
    (
        "Security Reader",
        &[
            "Microsoft.IoTSecurity/*/read",
            "Microsoft.Security/*/read",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ],
        &[],
        &[],
        &[],
        15,
    ),
    (
        "Security Admin",
        &["Microsoft.IoTSecurity/*", "Microsoft.Security/*"],
        &["Microsoft.IoTSecurity/sensors/delete"],
        &[],
        &[],
        4,
    ),
    (
        "Device Data Contributor",
        &["Microsoft.Edge/targets/read"],
        &[],
        &["Microsoft.Edge/targets/devices/*"],
        &["Microsoft.Edge/targets/devices/commands/*"],
        8,
    ),
    (
        "User Access Administrator",
        &["Microsoft.Authorization/*", "*/read"],
        &[],
        &[],
        &[],
        1,
    ),
];

/// ASCII case-insensitive `*` glob (the generator's own, independent of the engine's).
fn glob(pattern: &str, text: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let text = text.to_ascii_lowercase();
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        // No `*`: a literal.
        return pattern == text;
    };
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

fn role_grants(doc: &RoleDoc) -> Vec<(&'static str, bool)> {
    let granted = |allow: &[String], remove: &[String], action: &str| {
        allow.iter().any(|p| glob(p, action)) && !remove.iter().any(|p| glob(p, action))
    };
    let control = CONTROL
        .iter()
        .filter(|a| granted(&doc.actions, &doc.not_actions, a))
        .map(|&a| (a, false));
    let data = DATA
        .iter()
        .filter(|a| granted(&doc.data_actions, &doc.not_data_actions, a))
        .map(|&a| (a, true));
    control.chain(data).collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|&s| s.to_owned()).collect()
}

impl Workload {
    /// Builds the model for a size and a seed (deterministic).
    pub fn new(size: Size, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let scopes = Scopes::new(size.scopes);

        // Principals: [users | devices | service principals | groups].
        let total = size.principals.max(100);
        let group_count = (total / 20).max(10);
        let device_count = total / 10;
        let sp_count = (total / 100).max(1);
        let user_count = total - group_count - device_count - sp_count;
        let mut principals = Vec::with_capacity(total);
        let mut kinds = Vec::with_capacity(total);
        for i in 0..user_count {
            principals.push(format!("user:u{i}@contoso.com"));
            kinds.push(Kind::User);
        }
        for i in 0..device_count {
            principals.push(format!("device:d{i}"));
            kinds.push(Kind::Device);
        }
        for i in 0..sp_count {
            principals.push(format!("servicePrincipal:sp{i}"));
            kinds.push(Kind::ServicePrincipal);
        }
        let first_group = principals.len();
        for i in 0..group_count {
            principals.push(format!("group:g{i}"));
            kinds.push(Kind::Group);
        }
        let members = 0..first_group;
        let groups = first_group..total;

        // Groups in three tiers: top (10%), middle (30%), leaf (60%).
        let top = (group_count / 10).max(1);
        let middle = (group_count * 3 / 10).max(1);
        let leaf = group_count - top - middle;
        let g = |i: usize| (first_group + i) as u32;
        let mut member_of: Vec<Vec<u32>> = vec![Vec::new(); total];
        for i in top..top + middle {
            if rng.chance(0.7) {
                member_of[first_group + i].push(g(rng.below(top)));
            }
        }
        for i in top + middle..group_count {
            if rng.chance(0.7) {
                let parent = g(top + rng.below(middle));
                member_of[first_group + i].push(parent);
                if rng.chance(0.1) {
                    let other = g(top + rng.below(middle));
                    if other != parent {
                        member_of[first_group + i].push(other);
                    }
                }
            }
        }
        let random_group = |rng: &mut Rng| {
            if rng.chance(0.8) {
                g(top + middle + rng.below(leaf))
            } else {
                g(top + rng.below(middle))
            }
        };
        for p in members.clone() {
            let count = match kinds[p] {
                Kind::User => rng.weighted(&[10, 40, 35, 15]),
                Kind::Device => usize::from(rng.chance(0.5)),
                _ => usize::from(rng.chance(0.3)),
            };
            for _ in 0..count {
                let group = random_group(&mut rng);
                if !member_of[p].contains(&group) {
                    member_of[p].push(group);
                }
            }
        }

        // Roles.
        let mut roles = Vec::with_capacity(size.roles);
        for (i, &(name, actions, not_actions, data_actions, not_data_actions, _)) in
            BUILTINS.iter().take(size.roles).enumerate()
        {
            let doc = RoleDoc {
                name: name.to_owned(),
                id: Some(rng.guid()),
                description: Some(format!("Built-in-like role {i}")),
                actions: strings(actions),
                not_actions: strings(not_actions),
                data_actions: strings(data_actions),
                not_data_actions: strings(not_data_actions),
                assignable_scopes: None,
            };
            roles.push(Role {
                grants: role_grants(&doc),
                doc,
                subscription: None,
            });
        }
        while roles.len() < size.roles {
            let i = roles.len();
            let mut doc = RoleDoc {
                name: format!("Custom Role {i:03}"),
                id: Some(rng.guid()),
                description: Some(format!("Synthetic custom role {i}")),
                ..RoleDoc::default()
            };
            if rng.chance(0.6) {
                doc.actions
                    .push(WILDCARDS[rng.below(WILDCARDS.len())].to_owned());
            }
            for _ in 0..1 + rng.below(5) {
                let action = CONTROL[rng.below(CONTROL.len())].to_owned();
                if !doc.actions.contains(&action) {
                    doc.actions.push(action);
                }
            }
            if rng.chance(0.35) {
                doc.not_actions
                    .push(NOT_ACTIONS[rng.below(NOT_ACTIONS.len())].to_owned());
            }
            if rng.chance(0.15) {
                if rng.chance(0.5) {
                    doc.data_actions
                        .push(DATA_WILDCARDS[rng.below(DATA_WILDCARDS.len())].to_owned());
                    if rng.chance(0.3) {
                        doc.not_data_actions.push(NOT_DATA_ACTIONS[0].to_owned());
                    }
                } else {
                    doc.data_actions
                        .push(DATA[rng.below(DATA.len())].to_owned());
                }
            }
            let subscription = if rng.chance(0.1) {
                let s = rng.below(scopes.subscriptions) as u32;
                doc.assignable_scopes = Some(vec![scopes.path(ScopeRef::Subscription(s))]);
                Some(s)
            } else {
                None
            };
            roles.push(Role {
                grants: role_grants(&doc),
                doc,
                subscription,
            });
        }

        // Assignments. The first one, an Owner at `/` for a top group, satisfies the
        // constraint.
        let mut assignments = Vec::with_capacity(size.assignments);
        if size.assignments > 0 {
            assignments.push(Assignment {
                principal: g(0),
                role: 0,
                scope: ScopeRef::Root,
                window: Window::Always,
                id: rng.guid(),
                role_by_id: false,
            });
        }
        let builtin_weights: Vec<u32> = BUILTINS.iter().take(roles.len()).map(|b| b.5).collect();
        let custom = roles.len() - builtin_weights.len();
        while assignments.len() < size.assignments {
            let principal = if rng.chance(0.2) {
                groups.start + rng.below(groups.len())
            } else {
                rng.below(members.len())
            } as u32;
            let role = if custom == 0 || rng.chance(0.5) {
                rng.weighted(&builtin_weights)
            } else {
                builtin_weights.len() + rng.below(custom)
            };
            let scope = match roles[role].subscription {
                Some(s) => match rng.weighted(&[10, 25, 65]) {
                    0 => ScopeRef::Subscription(s),
                    1 => ScopeRef::ResourceGroup(scopes.random_rg_in(&mut rng, s)),
                    _ => {
                        let rg = scopes.random_rg_in(&mut rng, s);
                        ScopeRef::Target(scopes.random_target_in_rg(&mut rng, rg))
                    }
                },
                // Per 10,000: 1 at `/`, 100 at a service group, 400 at a subscription,
                // 2,000 at a resource group, the rest at a target.
                None => match rng.weighted(&[1, 100, 400, 2_000, 7_499]) {
                    0 => ScopeRef::Root,
                    1 => ScopeRef::ServiceGroup(rng.below(scopes.service_groups) as u32),
                    2 => ScopeRef::Subscription(rng.below(scopes.subscriptions) as u32),
                    3 => ScopeRef::ResourceGroup(rng.below(scopes.resource_groups) as u32),
                    _ => ScopeRef::Target(rng.below(scopes.targets) as u32),
                },
            };
            let window = if rng.chance(0.03) {
                match rng.below(3) {
                    0 => Window::Expired,
                    1 => Window::Active,
                    _ => Window::Future,
                }
            } else {
                Window::Always
            };
            assignments.push(Assignment {
                principal,
                role: role as u32,
                scope,
                window,
                id: rng.guid(),
                role_by_id: rng.chance(0.3),
            });
        }

        // Deny assignments.
        let deny = |name: String, principals: &[&str], scope: String| DenyAssignmentDoc {
            name,
            principals: strings(principals),
            scope,
            ..DenyAssignmentDoc::default()
        };
        let mut denies = Vec::new();
        let mut d = deny(
            "devices-never-manage-access".into(),
            &["device:*"],
            "/".into(),
        );
        d.actions = strings(&["Microsoft.Authorization/*"]);
        denies.push(d);
        let mut d = deny(
            "service-principals-never-delete".into(),
            &["servicePrincipal:*"],
            scopes.path(ScopeRef::Subscription(0)),
        );
        d.actions = strings(&["*/delete"]);
        d.not_actions = strings(&["Microsoft.Edge/targets/deployments/delete"]);
        denies.push(d);
        let top_group = principals[g(0) as usize].clone();
        for i in 0..scopes.subscriptions.min(5) {
            let rg = ((i * 7 + 3) % scopes.resource_groups) as u32;
            let mut d = deny(
                format!("change-freeze-rg{rg}"),
                &["*"],
                scopes.path(ScopeRef::ResourceGroup(rg)),
            );
            d.exclude_principals = vec![top_group.clone()];
            d.actions = strings(&[
                "Microsoft.Edge/targets/deploy/action",
                "Microsoft.Edge/targets/deployments/write",
            ]);
            denies.push(d);
        }
        let leaf_group = principals[g(top + middle) as usize].clone();
        let mut d = deny(
            "contractors-no-remote-commands".into(),
            &[leaf_group.as_str()],
            scopes.path(ScopeRef::ServiceGroup(0)),
        );
        d.data_actions = strings(&["Microsoft.Edge/targets/devices/commands/*"]);
        denies.push(d);

        Self {
            size,
            seed,
            scopes,
            principals,
            kinds,
            member_of,
            roles,
            assignments,
            denies,
            members,
            groups,
        }
    }

    /// The catalog: every vocabulary action; each `write`, `delete` or `action` implies
    /// the `read` of the same resource type when the vocabulary has it.
    pub fn catalog(&self) -> Vec<CatalogActionDoc> {
        let known: std::collections::HashSet<&str> = CONTROL.iter().chain(DATA).copied().collect();
        let entry = |name: &str, data: bool| {
            let base = name.rsplit_once('/').map_or("", |(b, _)| b);
            let mut implies = Vec::new();
            if !name.ends_with("/read") {
                let read = format!("{base}/read");
                if known.contains(read.as_str()) {
                    implies.push(read);
                }
                if name.ends_with("/deploy/action") {
                    implies.push("Microsoft.Edge/targets/solutions/read".to_owned());
                }
            }
            CatalogActionDoc {
                name: name.to_owned(),
                description: None,
                data_action: data,
                implies,
            }
        };
        CONTROL
            .iter()
            .map(|a| entry(a, false))
            .chain(DATA.iter().map(|a| entry(a, true)))
            .collect()
    }

    /// The policy as iot-authz documents: `roles.yaml` (catalog and roles), `groups.yaml`
    /// (groups and scope links), `assignments.yaml` (assignments, deny assignments and a
    /// constraint).
    pub fn documents(&self) -> Vec<(String, Document)> {
        let mut children: Vec<Vec<u32>> = vec![Vec::new(); self.principals.len()];
        for (member, parents) in self.member_of.iter().enumerate() {
            for &group in parents {
                children[group as usize].push(member as u32);
            }
        }
        let groups = self
            .groups
            .clone()
            .map(|gi| GroupDoc {
                id: self.principals[gi].clone(),
                members: children[gi]
                    .iter()
                    .map(|&m| self.principals[m as usize].clone())
                    .collect(),
            })
            .collect();
        let scope_links = self
            .scopes
            .links
            .iter()
            .map(|(target, parents)| ScopeLinkDoc {
                scope: self.scopes.path(ScopeRef::Target(*target)),
                parents: parents
                    .iter()
                    .map(|&g| self.scopes.path(ScopeRef::ServiceGroup(g)))
                    .collect(),
            })
            .collect();
        let assignments = self
            .assignments
            .iter()
            .map(|a| {
                let role = &self.roles[a.role as usize].doc;
                let (not_before, not_after) = a.window.bounds();
                AssignmentDoc {
                    principal: self.principals[a.principal as usize].clone(),
                    role: match (&role.id, a.role_by_id) {
                        (Some(id), true) => id.clone(),
                        _ => role.name.clone(),
                    },
                    scope: self.scopes.path(a.scope),
                    id: Some(a.id.clone()),
                    not_before: not_before.map(str::to_owned),
                    not_after: not_after.map(str::to_owned),
                }
            })
            .collect();
        let constraints = if self.assignments.is_empty() {
            Vec::new()
        } else {
            vec![ConstraintDoc {
                min_assignments: MinAssignmentsDoc {
                    role: "Owner".to_owned(),
                    scope: "/".to_owned(),
                    count: 1,
                },
            }]
        };
        vec![
            (
                "roles.yaml".to_owned(),
                Document {
                    version: Some(1),
                    actions: self.catalog(),
                    roles: self.roles.iter().map(|r| r.doc.clone()).collect(),
                    ..Document::default()
                },
            ),
            (
                "groups.yaml".to_owned(),
                Document {
                    version: Some(1),
                    groups,
                    scope_links,
                    ..Document::default()
                },
            ),
            (
                "assignments.yaml".to_owned(),
                Document {
                    version: Some(1),
                    assignments,
                    deny_assignments: self.denies.clone(),
                    constraints,
                    ..Document::default()
                },
            ),
        ]
    }

    /// The documents with the last one's assignments moved to a last, store-like document
    /// (`etcd:/iot-authz/`), in id order and one per id, as the etcd store lists them; and
    /// those assignments.
    pub fn store_documents(&self) -> (Vec<(String, Document)>, Vec<AssignmentDoc>) {
        let mut docs = self.documents();
        let mut store: Vec<AssignmentDoc> = docs
            .last_mut()
            .map(|(_, d)| std::mem::take(&mut d.assignments))
            .unwrap_or_default();
        store.sort_by(|a, b| a.id.cmp(&b.id));
        store.dedup_by(|a, b| a.id == b.id);
        docs.push((
            "etcd:/iot-authz/".to_owned(),
            Document {
                version: Some(1),
                assignments: store.clone(),
                ..Document::default()
            },
        ));
        (docs, store)
    }

    /// Every group that contains a principal, transitively.
    pub fn groups_of(&self, principal: u32) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        let mut todo = self.member_of[principal as usize].clone();
        while let Some(g) = todo.pop() {
            if !out.contains(&g) {
                out.push(g);
                todo.extend_from_slice(&self.member_of[g as usize]);
            }
        }
        out
    }

    /// `count` checks at target scopes, alternating one built to be allowed and one drawn
    /// at random (mostly denied). Deterministic for a seed.
    pub fn requests(&self, count: usize, seed: u64) -> Vec<Request> {
        let mut rng = Rng::new(seed);
        let mut by_principal: Vec<Vec<u32>> = vec![Vec::new(); self.principals.len()];
        let mut held = vec![0usize; self.principals.len()];
        for (i, a) in self.assignments.iter().enumerate() {
            held[a.principal as usize] += 1;
            if a.window.active_at_reference() && !self.roles[a.role as usize].grants.is_empty() {
                by_principal[a.principal as usize].push(i as u32);
            }
        }
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let allow = out.len() % 2 == 0;
            let p = rng.below(self.members.len()) as u32;
            let groups = self.groups_of(p);
            let token_groups = if !groups.is_empty() && rng.chance(0.1) {
                vec![self.principals[groups[rng.below(groups.len())] as usize].clone()]
            } else {
                Vec::new()
            };
            let (target, action, data) = if allow {
                let candidates: Vec<u32> = std::iter::once(p)
                    .chain(groups.iter().copied())
                    .flat_map(|s| by_principal[s as usize].iter().copied())
                    .collect();
                if candidates.is_empty() {
                    continue;
                }
                let a = &self.assignments[candidates[rng.below(candidates.len())] as usize];
                let grants = &self.roles[a.role as usize].grants;
                let (action, data) = grants[rng.below(grants.len())];
                (
                    self.scopes.random_target_under(&mut rng, a.scope),
                    action,
                    data,
                )
            } else {
                let target = rng.below(self.scopes.targets) as u32;
                if rng.chance(0.15) {
                    (target, DATA[rng.below(DATA.len())], true)
                } else {
                    (target, CONTROL[rng.below(CONTROL.len())], false)
                }
            };
            out.push(Request {
                principal: self.principals[p as usize].clone(),
                groups: token_groups,
                action: action.to_owned(),
                data_action: data,
                scope: self.scopes.path(ScopeRef::Target(target)),
                built_to_allow: allow,
                held: std::iter::once(p)
                    .chain(groups.iter().copied())
                    .map(|s| held[s as usize])
                    .sum(),
            });
        }
        out
    }
}
