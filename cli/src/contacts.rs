//! `cpis contacts`: shows or sets the calling council's contact details (name, 24/7 emergency
//! duty team phone, office-hours phone), which health sees beside every alert.

use cpis_proto::cpis::common::v1::LocalAuthority;
use cpis_proto::cpis::registry::v1::{GetContactDetailsRequest, SetContactDetailsRequest};

use crate::client::{CliError, CouncilArgs};
use crate::render;

/// `cpis contacts` arguments.
#[derive(Debug, clap::Args)]
pub struct ContactsArgs {
    #[command(subcommand)]
    pub action: Option<ContactsAction>,
    #[command(flatten)]
    pub council: CouncilArgs,
    #[command(flatten)]
    pub output: crate::client::Output,
}

/// Show (the default) or set.
#[derive(Debug, clap::Subcommand)]
pub enum ContactsAction {
    /// Show the council's contact details.
    Get,
    /// Replace the council's contact details.
    Set {
        /// The council's name as health should see it.
        #[arg(long)]
        name: String,
        /// The emergency duty team's 24/7 phone number (mandatory).
        #[arg(long)]
        emergency_duty_phone: String,
        /// The office-hours phone number.
        #[arg(long, default_value = "")]
        office_hours_phone: String,
    },
}

/// Runs the command; returns the exit code.
pub async fn run(args: ContactsArgs, json_output: bool) -> Result<u8, CliError> {
    let mut client = args.council.client().await?;
    let la = match args.action.unwrap_or(ContactsAction::Get) {
        ContactsAction::Get => {
            client
                .get_contact_details(GetContactDetailsRequest::default())
                .await?
                .into_inner()
                .local_authority
        }
        ContactsAction::Set {
            name,
            emergency_duty_phone,
            office_hours_phone,
        } => {
            client
                .set_contact_details(SetContactDetailsRequest {
                    local_authority: Some(LocalAuthority {
                        name,
                        emergency_duty_phone,
                        office_hours_phone,
                        ..LocalAuthority::default()
                    }),
                })
                .await?
                .into_inner()
                .local_authority
        }
    }
    .unwrap_or_default();
    if json_output {
        println!("{}", render::local_authority_json(&la));
    } else {
        println!("{} [{}]", la.name, la.ods_code);
        println!("  emergency duty team  {}", la.emergency_duty_phone);
        if !la.office_hours_phone.is_empty() {
            println!("  office hours         {}", la.office_hours_phone);
        }
        println!(
            "  updated              {}",
            render::timestamp(la.update_time.as_ref())
        );
    }
    Ok(0)
}
