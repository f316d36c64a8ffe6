//! The dev stack's demo dataset: three councils with contact details and children on each kind
//! of plan, on NHS numbers from the test range (999 000 0000 – 999 999 9999: valid checksums,
//! never issued). Written once, through the registry's own council API, the first time a data
//! directory is used; later starts leave whatever is there alone.

use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};
use cpis_core::auth::DevSigner;
use cpis_proto::cpis::common::v1::{
    ChildProtectionPlan, ChildRecord, LocalAuthority, LookedAfterChild, LookedAfterLegalBasis,
    PlanPeriod, UnbornChildProtectionPlan,
};
use cpis_proto::cpis::registry::v1::{
    BatchHeader, GetContactDetailsRequest, SetContactDetailsRequest, UploadBatchRequest,
    upload_batch_request::Item,
};
use cpis_proto::google::r#type::Date;
use secrecy::SecretString;

use crate::client::{self, CliError};
use crate::tokens;

/// A demo council: ODS code, name, emergency duty and office phones (Ofcom drama numbers).
pub const COUNCILS: [(&str, &str, &str, &str); 3] = [
    (
        "DEV01",
        "Devtown Borough Council",
        "020 7946 0000",
        "020 7946 0001",
    ),
    (
        "DEV02",
        "Sampleshire County Council",
        "0117 496 0000",
        "0117 496 0001",
    ),
    ("DEV03", "Exampleton City Council", "0161 496 0000", ""),
];

/// The `i`-th valid NHS number of the test range.
pub fn test_nhs_number(i: usize) -> String {
    cpis_core::nhs_number::test_range()
        .nth(i)
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// What a demo NHS number shows, for the printed guide.
#[derive(Debug, Clone)]
pub struct DemoChild {
    /// The NHS number.
    pub nhs_number: String,
    /// What a clinician sees.
    pub shows: &'static str,
}

fn date(day: NaiveDate) -> Option<Date> {
    use chrono::Datelike as _;
    Some(Date {
        year: day.year(),
        month: i32::try_from(day.month()).unwrap_or(1),
        day: i32::try_from(day.day()).unwrap_or(1),
    })
}

fn period(start: NaiveDate, end: Option<NaiveDate>) -> Option<PlanPeriod> {
    Some(PlanPeriod {
        start_date: date(start),
        end_date: end.and_then(date),
        delete_date: None,
    })
}

/// The demo children and which council holds each record, relative to `today`.
pub fn records(today: NaiveDate) -> Vec<(&'static str, ChildRecord)> {
    let ago = |days: u64| today.checked_sub_days(Days::new(days)).unwrap_or(today);
    let ahead = |days: u64| today.checked_add_days(Days::new(days)).unwrap_or(today);
    let child = |i: usize, case: &str, given: &str, family: &str, age_days: u64| ChildRecord {
        nhs_number: test_nhs_number(i),
        local_case_id: case.to_owned(),
        given_name: given.to_owned(),
        family_name: family.to_owned(),
        date_of_birth: date(ago(age_days)),
        ..ChildRecord::default()
    };
    let cpp = |start, end| {
        Some(ChildProtectionPlan {
            period: period(start, end),
        })
    };
    let lac = |start, basis: LookedAfterLegalBasis| {
        Some(LookedAfterChild {
            period: period(start, None),
            legal_basis: basis as i32,
        })
    };
    vec![
        (
            "DEV01",
            ChildRecord {
                child_protection_plan: cpp(ago(120), None),
                ..child(0, "DT-1001", "Alex", "Example", 6 * 365)
            },
        ),
        (
            "DEV01",
            ChildRecord {
                looked_after_child: lac(ago(400), LookedAfterLegalBasis::Section31CareOrder),
                ..child(1, "DT-1002", "Sam", "Sample", 9 * 365)
            },
        ),
        (
            "DEV02",
            ChildRecord {
                looked_after_child: lac(
                    ago(200),
                    LookedAfterLegalBasis::Section20VoluntaryAccommodation,
                ),
                ..child(2, "SS-2001", "Jo", "Placed", 12 * 365)
            },
        ),
        (
            "DEV01",
            ChildRecord {
                child_protection_plan: cpp(ago(30), None),
                ..child(2, "DT-1003", "Jo", "Placed", 12 * 365)
            },
        ),
        (
            "DEV03",
            ChildRecord {
                unborn_child_protection_plan: Some(UnbornChildProtectionPlan {
                    period: period(ago(60), None),
                    expected_delivery_date: date(ahead(90)),
                }),
                ..child(3, "EC-3001", "Morgan", "Expecting", 24 * 365)
            },
        ),
        (
            "DEV02",
            ChildRecord {
                child_protection_plan: cpp(ago(500), Some(ago(100))),
                ..child(4, "SS-2002", "Riley", "Ended", 4 * 365)
            },
        ),
        (
            "DEV03",
            ChildRecord {
                child_protection_plan: cpp(ago(900), Some(ago(400))),
                ..child(5, "EC-3002", "Casey", "Past", 8 * 365)
            },
        ),
    ]
}

/// What each demo NHS number shows a clinician, for the printed guide.
pub fn guide() -> Vec<DemoChild> {
    vec![
        DemoChild {
            nhs_number: test_nhs_number(0),
            shows: "child protection plan, Devtown",
        },
        DemoChild {
            nhs_number: test_nhs_number(1),
            shows: "looked after (s31 care order), Devtown",
        },
        DemoChild {
            nhs_number: test_nhs_number(2),
            shows: "two councils: looked after (s20) by Sampleshire, protection plan by Devtown",
        },
        DemoChild {
            nhs_number: test_nhs_number(3),
            shows: "unborn child protection plan on the mother's number, Exampleton",
        },
        DemoChild {
            nhs_number: test_nhs_number(4),
            shows: "plan ended 100 days ago (still shown for 12 months), Sampleshire",
        },
        DemoChild {
            nhs_number: test_nhs_number(5),
            shows: "plan ended over a year ago: nothing shown",
        },
        DemoChild {
            nhs_number: test_nhs_number(6),
            shows: "no record: nothing shown",
        },
    ]
}

/// Writes the demo dataset through the registry at `url` (trusting `ca` for https), once per council: a council that
/// already has contact details is left as it is. Returns how many councils were seeded.
pub async fn seed(
    url: &str,
    ca: Option<&std::path::Path>,
    signer: &DevSigner,
) -> Result<usize, CliError> {
    let records = records(Utc::now().date_naive());
    let mut seeded = 0;
    for (ods, name, edt, office) in COUNCILS {
        let token = signer
            .mint(
                &tokens::council(ods, "read write"),
                Duration::from_secs(600),
            )
            .map_err(|e| CliError::Other(e.to_string()))?;
        let token = SecretString::from(token);
        let mut council = client::council(url, ca, None, Some(&token)).await?;
        match council
            .get_contact_details(GetContactDetailsRequest::default())
            .await
        {
            Ok(_) => continue,
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(status.into()),
        }
        let mut batch = vec![UploadBatchRequest {
            item: Some(Item::Header(BatchHeader {
                batch_id: format!("demo-{ods}"),
                ..BatchHeader::default()
            })),
        }];
        batch.extend(
            records
                .iter()
                .filter(|(holder, _)| *holder == ods)
                .map(|(_, record)| UploadBatchRequest {
                    item: Some(Item::Record(record.clone())),
                }),
        );
        council
            .set_contact_details(SetContactDetailsRequest {
                local_authority: Some(LocalAuthority {
                    name: name.to_owned(),
                    emergency_duty_phone: edt.to_owned(),
                    office_hours_phone: office.to_owned(),
                    ..LocalAuthority::default()
                }),
            })
            .await?;
        let result = council
            .upload_batch(tokio_stream::iter(batch))
            .await?
            .into_inner()
            .result
            .unwrap_or_default();
        if result.rejected_count > 0 {
            return Err(CliError::Other(format!(
                "demo data for {ods} was rejected: {:?}",
                result.rejections
            )));
        }
        seeded += 1;
    }
    Ok(seeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_numbers_are_valid_and_in_the_test_range() {
        for i in 0..7 {
            let number = test_nhs_number(i);
            let parsed = cpis_core::nhs_number::NhsNumber::parse(&number);
            assert!(parsed.is_ok_and(|n| n.is_test_range()), "{number}");
        }
        assert_eq!(test_nhs_number(0), "9990000018");
        assert_eq!(test_nhs_number(1), "9990000026");
    }

    #[test]
    fn every_plan_type_is_in_the_demo() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap_or_default();
        let records = records(today);
        assert!(
            records
                .iter()
                .any(|(_, r)| r.child_protection_plan.is_some())
        );
        assert!(records.iter().any(|(_, r)| r.looked_after_child.is_some()));
        assert!(
            records
                .iter()
                .any(|(_, r)| r.unborn_child_protection_plan.is_some())
        );
        assert_eq!(guide().len(), 7);
    }
}
