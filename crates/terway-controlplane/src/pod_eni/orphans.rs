//! The `pod-eni-orphans` pass: ENIs made for a PodENI that no longer exists, or duplicates of the
//! ENI it records, are released. An ENI whose PodENI has no ENI id yet is a create in flight.

use std::collections::BTreeMap;

use kube::api::ListParams;
use kube::{Api, ResourceExt};
use terway_apis::PodEni;
use terway_cloud::{Cloud, EniFilter};

use super::bind::release_eni;
use super::plan::{eni_id, orphaned, CREATOR_TAG, TAG_POD_ENI};
use super::{key_of, Context};
use crate::error::Error;

/// One pass of the orphan GC; returns how many ENIs it released.
pub async fn collect_orphans<C: Cloud>(ctx: &Context<C>) -> Result<usize, Error> {
    let pod_enis: BTreeMap<String, String> = Api::<PodEni>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list PodENIs", e))?
        .items
        .iter()
        .map(|pe| {
            (
                key_of(&pe.namespace().unwrap_or_default(), &pe.name_any()),
                eni_id(pe).to_string(),
            )
        })
        .collect();
    let filter = EniFilter {
        tags: BTreeMap::from([(CREATOR_TAG.0.to_string(), CREATOR_TAG.1.to_string())]),
        ..EniFilter::default()
    };
    let enis = ctx
        .cloud
        .describe_network_interfaces(&filter)
        .await
        .map_err(|e| Error::cloud("describe the controlplane's ENIs", e))?;
    let mut released = 0;
    for eni in enis.iter().filter(|e| orphaned(e, &pod_enis)) {
        let owner = eni.tags.get(TAG_POD_ENI).cloned().unwrap_or_default();
        tracing::info!(eni = %eni.id, podeni = %owner, "releasing an orphaned ENI");
        release_eni(ctx, &eni.id, &format!("orphaned ENI of {owner}"), true).await?;
        released += 1;
    }
    Ok(released)
}
