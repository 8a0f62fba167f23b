//! The one workload every engine gets: an Azure-style RBAC tenant generated from a fixed seed.
//!
//! - A scope tree `/` → `/subscriptions/sub-N` → `.../resourceGroups/rg-N` →
//!   `.../providers/Microsoft.Edge/targets/target-N`.
//! - An action catalog of Azure-like control-plane actions (`Provider/resourceType/op`).
//! - About 20 roles whose `actions` / `notActions` use `*` wildcards (leading, middle, trailing).
//! - Users `user:uN` and role assignments at every level of the tree.
//! - Checks (principal, action, scope), about half of them allowed.
//!
//! Every string is generated in one canonical spelling and checks reuse it, so engines that
//! compare exactly (Cedar ids, Rego `glob.match`) see the same strings as the ones that compare
//! case-insensitively (iot-authz, the reference). Every checked action is in the catalog and
//! every checked scope is a node of the tree (Cedar needs both: see `engines/cedar.rs`).

/// The seed used unless `--seed` says otherwise.
pub const SEED: u64 = 0x1a2b_3c4d_5e6f_7081;

/// SplitMix64: tiny, fast, and good enough to draw a workload.
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

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 11) as u128 * n as u128) >> 53) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An index drawn with the given weights.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.below(total as usize) as u32;
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

/// Sizes of the generated workload.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub subscriptions: usize,
    pub groups_per_subscription: usize,
    pub targets_per_group: usize,
    pub users: usize,
    pub assignments: usize,
    pub checks: usize,
}

impl Size {
    /// The issue's size: 10,000 users, 50,000 assignments, 100,000 checks.
    pub const ISSUE: Size = Size {
        subscriptions: 8,
        groups_per_subscription: 16,
        targets_per_group: 32,
        users: 10_000,
        assignments: 50_000,
        checks: 100_000,
    };
}

/// One node of the scope tree.
#[derive(Debug, Clone)]
pub struct ScopeNode {
    pub path: String,
    /// Index of the path parent (`None` for `/`).
    pub parent: Option<usize>,
    /// 0 = root, 1 = subscription, 2 = resource group, 3 = target.
    pub level: u8,
    pub children: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct RoleDef {
    pub name: String,
    pub id: String,
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AssignmentDef {
    pub user: u32,
    pub role: u32,
    pub scope: u32,
}

/// One question: indices into the workload.
#[derive(Debug, Clone, Copy)]
pub struct CheckDef {
    pub user: u32,
    pub action: u32,
    pub scope: u32,
}

#[derive(Debug)]
pub struct Workload {
    pub seed: u64,
    pub catalog: Vec<String>,
    pub scopes: Vec<ScopeNode>,
    pub roles: Vec<RoleDef>,
    /// Principal ids, `user:uN`.
    pub users: Vec<String>,
    pub assignments: Vec<AssignmentDef>,
    pub checks: Vec<CheckDef>,
}

/// A resource type and the operations it has.
type ResourceType = (&'static str, &'static [&'static str]);

/// Resource providers, their resource types and the operations each type has.
const PROVIDERS: &[(&str, &[ResourceType])] = &[
    (
        "Microsoft.Edge",
        &[
            ("targets", &["read", "write", "delete", "deploy/action"]),
            ("targets/solutions", &["read", "write", "delete"]),
            ("solutionTemplates", &["read", "write", "delete"]),
            ("configurations", &["read", "write", "delete"]),
            ("sites", &["read", "write", "delete"]),
        ],
    ),
    (
        "Microsoft.IoTSecurity",
        &[
            ("alerts", &["read", "write", "delete", "dismiss/action"]),
            ("recommendations", &["read", "write"]),
            ("sensors", &["read", "write", "delete"]),
            ("sites", &["read", "write", "delete"]),
            ("devices", &["read", "write", "delete"]),
        ],
    ),
    (
        "Microsoft.Authorization",
        &[
            ("roleAssignments", &["read", "write", "delete"]),
            ("roleDefinitions", &["read", "write", "delete"]),
            ("locks", &["read", "write", "delete"]),
            ("policyAssignments", &["read", "write", "delete"]),
        ],
    ),
    (
        "Microsoft.Resources",
        &[
            ("subscriptions/resourceGroups", &["read", "write", "delete"]),
            ("deployments", &["read", "write", "delete", "cancel/action"]),
        ],
    ),
    (
        "Microsoft.Insights",
        &[
            ("alertRules", &["read", "write", "delete"]),
            ("diagnosticSettings", &["read", "write", "delete"]),
            ("metrics", &["read"]),
        ],
    ),
    (
        "Microsoft.Devices",
        &[
            ("IotHubs", &["read", "write", "delete", "listkeys/action"]),
            ("IotHubs/certificates", &["read", "write", "delete"]),
        ],
    ),
    (
        "Microsoft.KeyVault",
        &[
            ("vaults", &["read", "write", "delete"]),
            ("vaults/secrets", &["read", "write"]),
        ],
    ),
    (
        "Microsoft.Support",
        &[("supportTickets", &["read", "write"])],
    ),
];

/// Roles: (name, actions, notActions, how often it is assigned).
const ROLES: &[(&str, &[&str], &[&str], u32)] = &[
    ("Owner", &["*"], &[], 2),
    (
        "Contributor",
        &["*"],
        &[
            "Microsoft.Authorization/*/write",
            "Microsoft.Authorization/*/delete",
        ],
        6,
    ),
    ("Reader", &["*/read"], &[], 14),
    (
        "User Access Administrator",
        &["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
        &[],
        2,
    ),
    (
        "Edge Contributor",
        &[
            "Microsoft.Edge/*",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Support/*",
        ],
        &["Microsoft.Edge/*/delete"],
        8,
    ),
    ("Edge Reader", &["Microsoft.Edge/*/read"], &[], 10),
    (
        "Edge Deployer",
        &[
            "Microsoft.Edge/targets/read",
            "Microsoft.Edge/targets/deploy/action",
            "Microsoft.Edge/targets/solutions/*",
        ],
        &["Microsoft.Edge/targets/solutions/delete"],
        8,
    ),
    (
        "Security Reader",
        &[
            "Microsoft.IoTSecurity/*/read",
            "Microsoft.Insights/alertRules/read",
            "Microsoft.Support/*",
        ],
        &[],
        8,
    ),
    (
        "Security Admin",
        &[
            "Microsoft.IoTSecurity/*",
            "Microsoft.Authorization/policyAssignments/*",
            "Microsoft.Insights/alertRules/*",
        ],
        &["Microsoft.IoTSecurity/sensors/delete"],
        4,
    ),
    (
        "IoT Hub Contributor",
        &["Microsoft.Devices/*"],
        &["Microsoft.Devices/IotHubs/listkeys/action"],
        5,
    ),
    ("IoT Hub Reader", &["Microsoft.Devices/*/read"], &[], 6),
    (
        "Key Vault Contributor",
        &["Microsoft.KeyVault/*", "Microsoft.Resources/deployments/*"],
        &["Microsoft.KeyVault/vaults/secrets/*"],
        3,
    ),
    (
        "Monitoring Reader",
        &["*/read", "Microsoft.Support/*"],
        &["Microsoft.KeyVault/vaults/secrets/read"],
        6,
    ),
    (
        "Monitoring Contributor",
        &["*/read", "Microsoft.Insights/*", "Microsoft.Support/*"],
        &["Microsoft.Insights/*/delete", "Microsoft.KeyVault/*"],
        4,
    ),
    (
        "Resource Policy Contributor",
        &[
            "Microsoft.Authorization/policyAssignments/*",
            "Microsoft.Authorization/*/read",
            "Microsoft.Resources/deployments/*",
        ],
        &["Microsoft.Authorization/policyAssignments/delete"],
        3,
    ),
    (
        "Deployment Operator",
        &[
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ],
        &["Microsoft.Resources/deployments/delete"],
        4,
    ),
    (
        "Lock Administrator",
        &["Microsoft.Authorization/locks/*"],
        &[],
        2,
    ),
    (
        "Site Operator",
        &[
            "Microsoft.Edge/sites/*",
            "Microsoft.IoTSecurity/sites/*",
            "*/read",
        ],
        &["Microsoft.KeyVault/*", "*/delete"],
        5,
    ),
    (
        "Alert Responder",
        &[
            "Microsoft.IoTSecurity/alerts/*",
            "Microsoft.IoTSecurity/*/read",
        ],
        &["Microsoft.IoTSecurity/alerts/delete"],
        5,
    ),
    (
        "Sensor Technician",
        &[
            "Microsoft.IoTSecurity/sensors/*",
            "Microsoft.IoTSecurity/*/read",
        ],
        &["*/delete"],
        4,
    ),
    (
        "Limited Reader",
        &["*/read"],
        &["Microsoft.KeyVault/*", "Microsoft.Authorization/*"],
        6,
    ),
];

/// How assignments spread over the levels (root, subscription, resource group, target),
/// in tenths of a percent: 0.2 %, 4.8 %, 35 %, 60 %.
const LEVEL_WEIGHTS: [u32; 4] = [2, 48, 350, 600];

impl Workload {
    pub fn new(size: Size, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let catalog = build_catalog();
        let scopes = build_tree(size);
        let roles: Vec<RoleDef> = ROLES
            .iter()
            .enumerate()
            .map(|(i, (name, actions, not_actions, _))| RoleDef {
                name: (*name).to_owned(),
                id: format!("00000000-0000-4000-8000-{i:012}"),
                actions: actions.iter().map(|s| (*s).to_owned()).collect(),
                not_actions: not_actions.iter().map(|s| (*s).to_owned()).collect(),
            })
            .collect();
        let role_weights: Vec<u32> = ROLES.iter().map(|r| r.3).collect();
        let users: Vec<String> = (0..size.users).map(|i| format!("user:u{i}")).collect();
        let by_level: Vec<Vec<usize>> = (0..4)
            .map(|l| {
                (0..scopes.len())
                    .filter(|&i| scopes[i].level == l)
                    .collect()
            })
            .collect();

        // Assignments, without duplicates.
        let mut seen = std::collections::HashSet::new();
        let mut assignments = Vec::with_capacity(size.assignments);
        while assignments.len() < size.assignments {
            let level = rng.weighted(&LEVEL_WEIGHTS);
            let a = AssignmentDef {
                user: rng.below(size.users) as u32,
                role: rng.weighted(&role_weights) as u32,
                scope: *rng.pick(&by_level[level]) as u32,
            };
            if seen.insert(a) {
                assignments.push(a);
            }
        }

        // What each role grants, for drawing likely-allowed checks (by the reference matcher).
        let granted: Vec<Vec<u32>> = roles
            .iter()
            .map(|r| {
                (0..catalog.len() as u32)
                    .filter(|&a| crate::reference::role_grants(r, &catalog[a as usize]))
                    .collect()
            })
            .collect();
        let mut by_user: Vec<Vec<usize>> = vec![Vec::new(); size.users];
        for (i, a) in assignments.iter().enumerate() {
            by_user[a.user as usize].push(i);
        }

        // Checks: a mix of likely grants, near misses and noise, about half allowed.
        let mut checks = Vec::with_capacity(size.checks);
        while checks.len() < size.checks {
            let kind = rng.below(100);
            let user = rng.below(size.users);
            let Some(&ai) = (!by_user[user].is_empty()).then(|| rng.pick(&by_user[user])) else {
                // A user without assignments: noise.
                checks.push(CheckDef {
                    user: user as u32,
                    action: rng.below(catalog.len()) as u32,
                    scope: rng.below(scopes.len()) as u32,
                });
                continue;
            };
            let a = assignments[ai];
            let role = &granted[a.role as usize];
            let check = if kind < 40 {
                // An action the role grants, somewhere under the assignment: allowed.
                CheckDef {
                    user: user as u32,
                    action: *rng.pick(role),
                    scope: descend(&mut rng, &scopes, a.scope as usize) as u32,
                }
            } else if kind < 65 {
                // Under the assignment, any action: notActions and non-matching patterns.
                CheckDef {
                    user: user as u32,
                    action: rng.below(catalog.len()) as u32,
                    scope: descend(&mut rng, &scopes, a.scope as usize) as u32,
                }
            } else if kind < 85 {
                // A granted action at a sibling or cousin scope: allowed only through another
                // assignment.
                CheckDef {
                    user: user as u32,
                    action: *rng.pick(role),
                    scope: *rng.pick(&by_level[(scopes[a.scope as usize].level as usize).max(1)])
                        as u32,
                }
            } else {
                // Noise.
                CheckDef {
                    user: user as u32,
                    action: rng.below(catalog.len()) as u32,
                    scope: {
                        let level = 1 + rng.weighted(&[1, 4, 15]);
                        *rng.pick(&by_level[level]) as u32
                    },
                }
            };
            checks.push(check);
        }

        Self {
            seed,
            catalog,
            scopes,
            roles,
            users,
            assignments,
            checks,
        }
    }

    pub fn check_strings(&self, c: &CheckDef) -> (&str, &str, &str) {
        (
            &self.users[c.user as usize],
            &self.catalog[c.action as usize],
            &self.scopes[c.scope as usize].path,
        )
    }
}

/// A scope at or below `scope`: stops at each level with probability 1/4, else goes down.
fn descend(rng: &mut Rng, scopes: &[ScopeNode], mut scope: usize) -> usize {
    while !scopes[scope].children.is_empty() && !rng.chance(0.25) {
        scope = *rng.pick(&scopes[scope].children);
    }
    scope
}

fn build_catalog() -> Vec<String> {
    let mut catalog = Vec::new();
    for (provider, types) in PROVIDERS {
        for (ty, ops) in *types {
            for op in *ops {
                catalog.push(format!("{provider}/{ty}/{op}"));
            }
        }
    }
    catalog
}

fn build_tree(size: Size) -> Vec<ScopeNode> {
    let mut scopes = vec![ScopeNode {
        path: "/".into(),
        parent: None,
        level: 0,
        children: Vec::new(),
    }];
    let add = |scopes: &mut Vec<ScopeNode>, path: String, parent: usize, level: u8| {
        let i = scopes.len();
        scopes.push(ScopeNode {
            path,
            parent: Some(parent),
            level,
            children: Vec::new(),
        });
        scopes[parent].children.push(i);
        i
    };
    for s in 0..size.subscriptions {
        let sub_path = format!("/subscriptions/sub-{s:04}");
        let sub = add(&mut scopes, sub_path.clone(), 0, 1);
        for g in 0..size.groups_per_subscription {
            let rg_path = format!("{sub_path}/resourceGroups/rg-{s}-{g}");
            let rg = add(&mut scopes, rg_path.clone(), sub, 2);
            for t in 0..size.targets_per_group {
                add(
                    &mut scopes,
                    format!("{rg_path}/providers/Microsoft.Edge/targets/target-{s}-{g}-{t}"),
                    rg,
                    3,
                );
            }
        }
    }
    scopes
}
