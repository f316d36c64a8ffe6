//! `cpis lookup NHS_NUMBER`: asks the lookup service as a clinician (or an NHS 111 system) would,
//! and prints the minimal alert: each council holding a visible record with its phone numbers
//! and plans, and the recent accesses.

use cpis_proto::cpis::common::v1::AccessMode;
use cpis_proto::cpis::lookup::v1::LookupChildRequest;
use secrecy::SecretString;
use serde_json::json;

use crate::client::{self, CliError};
use crate::render;

/// `cpis lookup` arguments.
#[derive(Debug, clap::Args)]
pub struct LookupArgs {
    /// The child's (or, for an unborn child's plan, the mother's) NHS number, 10 digits.
    pub nhs_number: String,
    /// A scheduled silent read (activity B0170: no notification to the council) instead of an
    /// unscheduled access.
    #[arg(long)]
    pub scheduled: bool,
    /// The lookup service's address (http:// or https://).
    #[arg(
        long,
        env = "CPIS_LOOKUP_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub lookup_url: String,
    /// PEM file of the CA that signed the lookup service's certificate (https:// URLs).
    #[arg(long, env = "CPIS_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// The clinician's or system's bearer token (CIS2-style; `cpis token clinician` in dev).
    #[arg(long, env = "CPIS_NHS_TOKEN", hide_env_values = true)]
    pub token: Option<SecretString>,
    #[command(flatten)]
    pub output: crate::client::Output,
}

/// Runs the lookup; returns the exit code.
pub async fn run(args: LookupArgs, json_output: bool) -> Result<u8, CliError> {
    let mut client = client::lookup(
        &args.lookup_url,
        args.ca_cert.as_deref(),
        args.token.as_ref(),
    )
    .await?;
    let access_mode = if args.scheduled {
        AccessMode::ScheduledSilentRead
    } else {
        AccessMode::Unscheduled
    };
    let nhs_number = crate::records::nhs_number(&args.nhs_number);
    let answer = client
        .lookup_child(LookupChildRequest {
            nhs_number: nhs_number.clone(),
            access_mode: access_mode as i32,
        })
        .await?
        .into_inner();

    if json_output {
        let alerts: Vec<_> = answer
            .alerts
            .iter()
            .map(|alert| {
                let la = alert.local_authority.clone().unwrap_or_default();
                json!({
                    "local_authority": render::local_authority_json(&la),
                    "plans": alert.plans.iter().map(|p| json!({
                        "plan_type": render::plan_type(p.plan_type),
                        "start_date": render::date_json(p.start_date.as_ref()),
                        "end_date": render::date_json(p.end_date.as_ref()),
                        "legal_basis": Some(render::legal_basis(p.legal_basis)).filter(|b| !b.is_empty()),
                        "expected_delivery_date": render::date_json(p.expected_delivery_date.as_ref()),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let accesses: Vec<_> = answer
            .recent_accesses
            .iter()
            .map(|a| {
                let org = a.organisation.clone().unwrap_or_default();
                json!({
                    "access_time": render::timestamp(a.access_time.as_ref()),
                    "organisation": { "ods_code": org.ods_code, "name": org.name },
                    "care_setting": render::care_setting(a.care_setting),
                    "accessor_name": a.accessor_name,
                    "job_role_name": a.job_role_name,
                    "access_mode": render::access_mode(a.access_mode),
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "nhs_number": nhs_number, "alerts": alerts, "recent_accesses": accesses })
        );
        return Ok(0);
    }

    if answer.alerts.is_empty() {
        println!("{nhs_number}: no CP-IS record (no plan, not looked after)");
        return Ok(0);
    }
    println!(
        "{nhs_number}: {} council{} hold{} a record",
        answer.alerts.len(),
        if answer.alerts.len() == 1 { "" } else { "s" },
        if answer.alerts.len() == 1 { "s" } else { "" }
    );
    for alert in &answer.alerts {
        let la = alert.local_authority.clone().unwrap_or_default();
        let office = if la.office_hours_phone.is_empty() {
            String::new()
        } else {
            format!("  office hours {}", la.office_hours_phone)
        };
        println!(
            "  {} [{}]  emergency duty team {}{office}",
            la.name, la.ods_code, la.emergency_duty_phone
        );
        for plan in &alert.plans {
            let mut line = format!(
                "    {:<30} from {}",
                render::plan_type(plan.plan_type),
                render::date(plan.start_date.as_ref())
            );
            if plan.end_date.is_some() {
                line.push_str(&format!(" to {}", render::date(plan.end_date.as_ref())));
            }
            let basis = render::legal_basis(plan.legal_basis);
            if !basis.is_empty() {
                line.push_str(&format!("  {basis}"));
            }
            if plan.expected_delivery_date.is_some() {
                line.push_str(&format!(
                    "  expected delivery {}",
                    render::date(plan.expected_delivery_date.as_ref())
                ));
            }
            println!("{line}");
        }
    }
    println!("recent accesses ({}):", answer.recent_accesses.len());
    for access in &answer.recent_accesses {
        let org = access.organisation.clone().unwrap_or_default();
        println!(
            "  {}  {} ({}) at {} [{}], {}, {}",
            render::timestamp(access.access_time.as_ref()),
            access.accessor_name,
            access.job_role_name,
            org.name,
            org.ods_code,
            render::care_setting(access.care_setting),
            render::access_mode(access.access_mode)
        );
    }
    Ok(0)
}
