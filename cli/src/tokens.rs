//! Development tokens: a council, a clinician (modelled on an NHS CIS2 ID token with a selected
//! role and its activity codes) and a system such as NHS 111 with a responsible person, signed
//! by the dev stack's key (kept in its data directory). `cpis token …` prints one; `cpis dev`
//! prints a ready set. A production deployment's JWKS never holds this key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use cpis_core::auth::DevSigner;
use serde_json::{Value, json};

/// Issuer of dev tokens (the services' default `--jwt-issuer`).
pub const ISSUER: &str = "cpis";
/// Audience of council tokens (the registry's default `--jwt-audience`).
pub const REGISTRY_AUDIENCE: &str = "cpis-registry";
/// Audience of NHS tokens (the lookup service's default `--jwt-audience`).
pub const LOOKUP_AUDIENCE: &str = "cpis-lookup";
/// The longest token lifetime the dev stack's services accept: dev tokens last a week (`--ttl`
/// default) so that a guide printed once stays usable; production services accept an hour
/// (lookup) or a day (registry). Services run by hand on `cpis token jwks` need
/// `--token-max-lifetime 30d` for these tokens.
pub const DEV_MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// A council with the given scopes (space-separated: read, write, operator).
pub fn council(ods_code: &str, scope: &str) -> Value {
    json!({ "sub": format!("{ods_code}-case-system"), "ods_code": ods_code, "scope": scope })
}

/// Who a clinician token names, and where they work.
#[derive(Debug, Clone, clap::Args)]
pub struct ClinicianArgs {
    /// The selected role's activity code: B0107 (unscheduled, notifies the council) or B0170
    /// (scheduled silent read).
    #[arg(long, default_value = "B0107")]
    pub activity: String,
    /// The organisation's ODS code.
    #[arg(long, default_value = "RDEV1")]
    pub org: String,
    /// The organisation's name.
    #[arg(long, default_value = "Devtown General Hospital")]
    pub org_name: String,
    /// The care setting, a `CareSetting` name without its prefix (EMERGENCY_DEPARTMENT,
    /// MATERNITY_UNIT, GP_IN_HOURS, …).
    #[arg(long, default_value = "EMERGENCY_DEPARTMENT")]
    pub setting: String,
    /// The user's name.
    #[arg(long, default_value = "Dr Sam Dev")]
    pub name: String,
    /// The user's id (CIS2 UUID).
    #[arg(long, default_value = "555021935107")]
    pub user_id: String,
    /// The job role name.
    #[arg(long, default_value = "Clinical Practitioner Access Role")]
    pub role_name: String,
}

/// Parses no arguments into `T`, so its defaults are the `default_value`s above and live in
/// one place.
fn clap_defaults<T: clap::Args>() -> T {
    #[derive(clap::Parser)]
    struct Only<T: clap::Args> {
        #[command(flatten)]
        args: T,
    }
    <Only<T> as clap::Parser>::parse_from(["cpis"]).args
}

impl Default for ClinicianArgs {
    /// The dev ED clinician: B0107 at Devtown General Hospital's emergency department.
    fn default() -> Self {
        clap_defaults()
    }
}

impl Default for SystemArgs {
    /// The dev NHS 111 system.
    fn default() -> Self {
        clap_defaults()
    }
}

/// A clinician whose selected role carries one activity code.
pub fn clinician(who: &ClinicianArgs) -> Value {
    json!({
        "sub": who.user_id,
        "uid": who.user_id,
        "name": who.name,
        "selected_roleid": "dev-role-1",
        "nhsid_nrbac_roles": [{
            "person_roleid": "dev-role-1",
            "org_code": who.org,
            "role_code": "R8000",
            "role_name": who.role_name,
            "activity_codes": [who.activity]
        }],
        "org_name": who.org_name,
        "care_setting": who.setting
    })
}

/// Which system a system token names.
#[derive(Debug, Clone, clap::Args)]
pub struct SystemArgs {
    /// The system's id.
    #[arg(long, default_value = "nhs111-dev-system")]
    pub system_id: String,
    /// The system's name.
    #[arg(long, default_value = "NHS 111 Clinical Assessment Service (dev)")]
    pub system_name: String,
    /// The organisation's ODS code.
    #[arg(long, default_value = "NHS111")]
    pub org: String,
    /// The organisation's name.
    #[arg(long, default_value = "NHS 111 (dev)")]
    pub org_name: String,
    /// The care setting the system serves.
    #[arg(long, default_value = "NHS_111")]
    pub setting: String,
    /// The activity code the system holds.
    #[arg(long, default_value = "B0107")]
    pub activity: String,
    /// The named responsible person.
    #[arg(long, default_value = "Pat Responsible")]
    pub responsible_person: String,
}

/// A system acting for a named responsible person.
pub fn system(what: &SystemArgs) -> Value {
    json!({
        "sub": what.system_id,
        "system_id": what.system_id,
        "system_name": what.system_name,
        "org_code": what.org,
        "org_name": what.org_name,
        "care_setting": what.setting,
        "activity_codes": [what.activity],
        "responsible_person": {
            "uid": "555021935999", "name": what.responsible_person,
            "role_code": "R8000", "role_name": "Clinical Lead"
        }
    })
}

/// `cpis token` arguments.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub kind: TokenKind,
    /// The dev stack's data directory, which holds the signing key `cpis dev` created there
    /// (relative to the current directory: run `cpis token` where you ran `cpis dev`).
    #[arg(
        long,
        env = "CPIS_DATA_DIR",
        default_value = ".data/dev",
        global = true
    )]
    pub data_dir: PathBuf,
    /// How long the token is valid: a number and a unit, as in 90s, 30m, 1h, 7d or 2w.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration, global = true)]
    pub ttl: Duration,
    /// Create a new signing key when --data-dir holds none. Without it `cpis token` refuses, as
    /// a running `cpis dev` would refuse tokens of a key it does not know.
    #[arg(long, global = true)]
    pub new_key: bool,
}

/// Whose token.
#[derive(Debug, clap::Subcommand)]
pub enum TokenKind {
    /// A council's case system (for the registry).
    Council {
        /// The council's ODS code.
        ods_code: String,
        /// Space-separated scopes: read, write, operator.
        #[arg(long, default_value = "read write")]
        scope: String,
    },
    /// A clinician with a CIS2-style role (for the lookup service).
    Clinician(ClinicianArgs),
    /// A system such as NHS 111 acting for a responsible person (for the lookup service).
    System(SystemArgs),
    /// An operator (scope "operator", for the registry's internal port with the operator's
    /// certificate).
    Operator,
    /// The dev signing key's public JWKS, for `registry-service --jwks-file` and
    /// `lookup-service --jwks-file` run by hand.
    Jwks,
}

/// Prints one token.
pub fn run(args: TokenArgs) -> anyhow::Result<u8> {
    let pem = if args.new_key {
        dev_signing_key(&args.data_dir)?
    } else {
        existing_signing_key(&args.data_dir)?
    };
    let (claims, audience) = match &args.kind {
        TokenKind::Council { ods_code, scope } => (council(ods_code, scope), REGISTRY_AUDIENCE),
        TokenKind::Clinician(who) => (clinician(who), LOOKUP_AUDIENCE),
        TokenKind::System(what) => (system(what), LOOKUP_AUDIENCE),
        TokenKind::Operator => (
            json!({ "sub": "dev-operator", "scope": "operator" }),
            REGISTRY_AUDIENCE,
        ),
        TokenKind::Jwks => {
            // Public keys only: the JWK of the signing key's public half (no "d").
            let signer = DevSigner::from_pkcs8_pem(&pem, ISSUER, REGISTRY_AUDIENCE)?;
            println!("{}", serde_json::to_string_pretty(signer.jwks())?);
            return Ok(0);
        }
    };
    let signer = DevSigner::from_pkcs8_pem(&pem, ISSUER, audience)?;
    println!("{}", signer.mint(&claims, args.ttl)?);
    Ok(0)
}

/// The signing key `cpis dev` keeps in `data_dir`; a missing one is an error that says where
/// it was looked for, not a new key whose tokens the running stack would refuse.
fn existing_signing_key(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("dev-signing-key.pem");
    match std::fs::read(&path) {
        Ok(pem) => Ok(pem),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let shown = std::path::absolute(&path).unwrap_or(path);
            anyhow::bail!(
                "no dev signing key at {}\nhint: run `cpis token` in the directory where you ran `cpis dev` (it creates the key on its first start), or give --data-dir / CPIS_DATA_DIR; --new-key makes a new key, whose tokens a stack started with another key refuses",
                shown.display()
            )
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The dev stack's signing key (PKCS#8 PEM), generated on first use and kept in the data
/// directory so that tokens printed earlier stay valid across restarts.
pub fn dev_signing_key(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let path = data_dir.join("dev-signing-key.pem");
    match std::fs::read(&path) {
        Ok(pem) => Ok(pem),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let pem = DevSigner::generate_pem()?;
            write_private(&path, &pem)?;
            Ok(pem)
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_flags() {
        let ed = ClinicianArgs::default();
        assert_eq!(
            (ed.activity.as_str(), ed.setting.as_str(), ed.org.as_str()),
            ("B0107", "EMERGENCY_DEPARTMENT", "RDEV1")
        );
        let system = SystemArgs::default();
        assert_eq!(
            (system.setting.as_str(), system.activity.as_str()),
            ("NHS_111", "B0107")
        );
    }
}
