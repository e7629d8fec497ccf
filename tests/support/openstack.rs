//! The local OpenStack plane scripts/test.sh starts once per run (scripts/openstack-local/), as
//! its administrator sees it: a project of a test's own, its quota, the compute service's
//! switch, token revocation, and nova-api's process. Plain Keystone and Nova REST, so the
//! faults are made the way an operator would make them, not through the code under test.

use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The plane's fixture image and flavor (scripts/lib/openstack.sh).
pub const IMAGE: &str = "11111111-2222-3333-4444-555555555555";
/// Flavor 1: 1 vCPU, 512 MiB.
pub const FLAVOR: &str = "1";

/// Nova, as the plane's catalog lists it.
const NOVA: &str = "http://127.0.0.1:18774/v2.1";

/// Tests that use the plane share it; the one that takes nova-api down has it alone.
static PLANE: RwLock<()> = RwLock::new(());

/// A share of the plane, for tests that need its services up (a failed test poisons nothing).
pub fn shared_plane() -> RwLockReadGuard<'static, ()> {
    PLANE.read().unwrap_or_else(|p| p.into_inner())
}

/// The plane alone, for a test that stops its services.
pub fn exclusive_plane() -> RwLockWriteGuard<'static, ()> {
    PLANE.write().unwrap_or_else(|p| p.into_inner())
}

/// The administrator's session.
pub struct Admin {
    http: reqwest::blocking::Client,
    keystone: String,
    token: String,
}

/// A project and a user of a test's own (admin role on that project only, which Nova asks for
/// to read a server's user-data back), so quota faults touch no other test.
pub struct Tenant {
    /// Project id.
    pub project_id: String,
    /// User id.
    pub user_id: String,
    /// Project and user name.
    pub name: String,
}

impl Tenant {
    /// The `OS_*` variables a process uses to act as this tenant (the password is the name:
    /// a throwaway user on a loopback-only plane).
    pub fn env(&self, keystone: &str) -> Vec<(String, String)> {
        [
            ("OS_AUTH_URL", keystone),
            ("OS_USERNAME", &self.name),
            ("OS_PASSWORD", &self.name),
            ("OS_PROJECT_NAME", &self.name),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_DOMAIN_NAME", "Default"),
            ("OS_REGION_NAME", "RegionOne"),
            ("OS_IDENTITY_API_VERSION", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// Deletes a test's project, user and servers, whatever happens.
pub struct TenantGone<'a>(pub &'a Admin, pub &'a Tenant);

impl Drop for TenantGone<'_> {
    fn drop(&mut self) {
        self.0.delete_tenant(self.1);
    }
}

fn plane_missing() -> String {
    "the OpenStack tests need the local plane and its admin OS_* variables: run scripts/test.sh, or \
     `scripts/openstack-local/start.sh` and eval its export lines"
        .into()
}

impl Admin {
    /// Authenticates as the plane's administrator from the `OS_*` variables.
    pub fn connect() -> Self {
        let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: {}", plane_missing()));
        let keystone = var("OS_AUTH_URL").trim_end_matches('/').to_string();
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let token = issue_token(&http, &keystone, &var("OS_USERNAME"), &var("OS_PASSWORD"), &var("OS_PROJECT_NAME"));
        Self { http, keystone, token }
    }

    /// Keystone's URL (`OS_AUTH_URL`).
    pub fn keystone(&self) -> &str {
        &self.keystone
    }

    fn send(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method.clone(), url).header("x-auth-token", &self.token);
        if url.starts_with(NOVA) {
            // os-services by id needs 2.53; quota sets take any.
            request = request.header("openstack-api-version", "compute 2.53");
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status();
        let text = response.text().unwrap();
        assert!(status.is_success(), "{method} {url}: HTTP {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// A new project and user named `name`, the user an admin of that project alone.
    pub fn create_tenant(&self, name: &str) -> Tenant {
        let k = &self.keystone;
        let project = self.send(
            reqwest::Method::POST,
            &format!("{k}/projects"),
            Some(json!({"project": {"name": name, "domain_id": "default"}})),
        );
        let project_id = project["project"]["id"].as_str().unwrap().to_string();
        let user = self.send(
            reqwest::Method::POST,
            &format!("{k}/users"),
            Some(json!({"user": {"name": name, "password": name, "domain_id": "default", "default_project_id": project_id}})),
        );
        let user_id = user["user"]["id"].as_str().unwrap().to_string();
        let roles = self.send(reqwest::Method::GET, &format!("{k}/roles?name=admin"), None);
        let role = roles["roles"][0]["id"].as_str().unwrap();
        self.send(reqwest::Method::PUT, &format!("{k}/projects/{project_id}/users/{user_id}/roles/{role}"), None);
        Tenant { project_id, user_id, name: name.to_string() }
    }

    /// Deletes the tenant's servers, user and project.
    pub fn delete_tenant(&self, tenant: &Tenant) {
        let servers = self.send(
            reqwest::Method::GET,
            &format!("{NOVA}/servers?all_tenants=1&project_id={}", tenant.project_id),
            None,
        );
        for server in servers["servers"].as_array().into_iter().flatten() {
            let id = server["id"].as_str().unwrap();
            let _ = self.http.delete(format!("{NOVA}/servers/{id}")).header("x-auth-token", &self.token).send();
        }
        let k = &self.keystone;
        let _ = self.http.delete(format!("{k}/users/{}", tenant.user_id)).header("x-auth-token", &self.token).send();
        let _ =
            self.http.delete(format!("{k}/projects/{}", tenant.project_id)).header("x-auth-token", &self.token).send();
    }

    /// Sets the project's instance quota (`openstack quota set --instances N`); Nova then
    /// refuses servers past it with 403.
    pub fn set_instance_quota(&self, project_id: &str, instances: i64) {
        self.send(
            reqwest::Method::PUT,
            &format!("{NOVA}/os-quota-sets/{project_id}"),
            Some(json!({"quota_set": {"instances": instances}})),
        );
    }

    /// Enables or disables every nova-compute service (`openstack compute service set
    /// --disable`): the scheduler then finds no valid host and new servers go to ERROR.
    pub fn set_compute_enabled(&self, enabled: bool) {
        let services = self.send(reqwest::Method::GET, &format!("{NOVA}/os-services?binary=nova-compute"), None);
        let status = if enabled { "enabled" } else { "disabled" };
        for service in services["services"].as_array().unwrap() {
            let id = service["id"].as_str().unwrap();
            self.send(reqwest::Method::PUT, &format!("{NOVA}/os-services/{id}"), Some(json!({"status": status})));
        }
    }

    /// Revokes every token the user holds, as disabling a user does, and enables it again:
    /// the user's credentials still work, its tokens no longer do.
    pub fn revoke_tokens(&self, user_id: &str) {
        for enabled in [false, true] {
            self.send(
                reqwest::Method::PATCH,
                &format!("{}/users/{user_id}", self.keystone),
                Some(json!({"user": {"enabled": enabled}})),
            );
        }
    }

    /// True if Keystone still accepts `token`.
    pub fn token_valid(&self, token: &str) -> bool {
        let response = self
            .http
            .get(format!("{}/auth/tokens", self.keystone))
            .header("x-auth-token", &self.token)
            .header("x-subject-token", token)
            .send()
            .unwrap();
        response.status().is_success()
    }

    /// An application credential of the tenant's user (made with the user's own token, as
    /// Keystone requires): (id, secret).
    pub fn create_application_credential(&self, tenant: &Tenant) -> (String, String) {
        let token = self.token_for(&tenant.name);
        let url = format!("{}/users/{}/application_credentials", self.keystone, tenant.user_id);
        let body = json!({"application_credential": {"name": tenant.name}});
        let response = self.http.post(&url).header("x-auth-token", token).json(&body).send().unwrap();
        let status = response.status();
        let answer: Value = response.json().unwrap();
        assert!(status.is_success(), "POST {url}: HTTP {status}: {answer}");
        let credential = &answer["application_credential"];
        (credential["id"].as_str().unwrap().to_string(), credential["secret"].as_str().unwrap().to_string())
    }

    /// A token for `name` (a tenant's user) in its own project.
    pub fn token_for(&self, name: &str) -> String {
        issue_token(&self.http, &self.keystone, name, name, name)
    }
}

fn issue_token(http: &reqwest::blocking::Client, keystone: &str, user: &str, password: &str, project: &str) -> String {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}
    }});
    let response = http
        .post(format!("{keystone}/auth/tokens"))
        .json(&body)
        .send()
        .unwrap_or_else(|e| panic!("cannot reach Keystone at {keystone}: {e}; {}", plane_missing()));
    assert!(response.status().is_success(), "Keystone refused {user}: HTTP {}", response.status());
    response.headers()["x-subject-token"].to_str().unwrap().to_string()
}

/// Kills nova-api (SIGKILL to its process group) or starts it again and waits until it answers.
pub fn nova_api(action: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/openstack-local/service.sh");
    let started = Instant::now();
    let (code, stdout, stderr) = super::run(std::process::Command::new("bash").arg(script).args([action, "nova-api"]));
    assert_eq!(code, 0, "service.sh {action} nova-api: {stdout}{stderr}");
    eprintln!("nova-api {action}: {:.1} s", started.elapsed().as_secs_f64());
}
