//! `devices`, `device add|show|assign|remove` and `groups`, on the API's shared device types.

use std::collections::BTreeMap;

use anyhow::anyhow;
use edgefleet_protocol::api::{
    AddDeviceRequest, DesiredRequest, DesiredVersion, DeviceDetail, DeviceEnrollment, DeviceList,
    GroupList,
};
use edgefleet_protocol::message::Desired;
use reqwest::Method;

use super::show::{ago, or_dash, print_json, table, wire_name};
use super::{Client, urlencode};

pub async fn devices(
    client: &Client,
    group: Option<&str>,
    tag: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(g) = group {
        query.push(format!("group={}", urlencode(g)));
    }
    if let Some(t) = tag {
        query.push(format!("tag={}", urlencode(t)));
    }
    let list = every_page(client, &query).await?;
    if as_json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .devices
        .iter()
        .map(|d| {
            let running = d
                .running
                .iter()
                .map(|(name, r)| format!("{name} {}", or_dash(r.version.as_ref())))
                .collect::<Vec<_>>()
                .join(", ");
            let state = if !d.enrolled {
                "not enrolled"
            } else if d.online {
                "online"
            } else {
                "offline"
            };
            vec![
                d.id.to_string(),
                d.group.clone(),
                state.into(),
                ago(d.last_seen),
                if running.is_empty() {
                    "-".into()
                } else {
                    running
                },
                or_dash(d.agent_version.as_ref()),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["DEVICE", "GROUP", "STATE", "LAST SEEN", "RUNNING", "AGENT"],
            &rows
        )
    );
    Ok(())
}

/// The server answers pages of at most 1,000 devices; the operator asked for all of them.
async fn every_page(client: &Client, query: &[String]) -> anyhow::Result<DeviceList> {
    let page = |after: Option<&str>| {
        let mut page_query = query.to_vec();
        page_query.push("limit=1000".into());
        if let Some(a) = after {
            page_query.push(format!("after={}", urlencode(a)));
        }
        format!("/api/v1/devices?{}", page_query.join("&"))
    };
    let mut list: DeviceList = client.get(&page(None), "listing devices").await?;
    while let Some(after) = list.next_after.take() {
        let next: DeviceList = client.get(&page(Some(&after)), "listing devices").await?;
        list.devices.extend(next.devices);
        list.next_after = next.next_after;
    }
    Ok(list)
}

/// `k=v` pairs from `--tag` arguments.
pub fn parse_tags(tags: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    tags.iter()
        .map(|t| {
            t.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("--tag {t:?}: expected KEY=VALUE"))
        })
        .collect()
}

pub async fn device_add(
    client: &Client,
    id: &str,
    group: Option<&str>,
    tags: &[String],
    renew: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let request = AddDeviceRequest {
        id: id.to_owned(),
        group: group.map(str::to_owned),
        tags: parse_tags(tags)?,
        renew,
    };
    let answer: DeviceEnrollment = client
        .send_json(
            Method::POST,
            "/api/v1/devices",
            &request,
            "registering the device",
        )
        .await?;
    if as_json {
        return print_json(&answer);
    }
    println!(
        "registered {id}. One-time enrollment token (valid until {}):\n{}\n\
         Put it on the device (edge-agent enroll --server {} --token-file FILE); it works once.",
        jiff::Timestamp::from_second(answer.expires_at)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        answer.enrollment_token,
        client.login.server,
    );
    Ok(())
}

pub async fn device_show(client: &Client, id: &str, as_json: bool) -> anyhow::Result<()> {
    let d: DeviceDetail = client
        .get(
            &format!("/api/v1/devices/{}", urlencode(id)),
            "showing the device",
        )
        .await?;
    if as_json {
        return print_json(&d);
    }
    print!("{}", render_device(&d));
    Ok(())
}

/// One device as a block of text: who it is, what it should run and runs, its recent events.
fn render_device(d: &DeviceDetail) -> String {
    let s = &d.summary;
    let tags = s
        .tags
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = format!(
        "device      {}\ngroup       {}\ntags        {}\nenrolled    {}\nlast seen   {}\n\
         agent       {}\ndesired     revision {}\n",
        s.id,
        s.group,
        if tags.is_empty() { "-".into() } else { tags },
        s.enrolled,
        ago(s.last_seen),
        or_dash(s.agent_version.as_ref()),
        s.desired_revision,
    );
    for m in d.desired.iter().flat_map(|desired| &desired.models) {
        out.push_str(&format!("  wants     {}\n", m.target));
    }
    for m in d.reported.iter().flat_map(|r| &r.models) {
        out.push_str(&format!(
            "  runs      {} {} ({}){}\n",
            m.model,
            or_dash(m.active.as_ref().map(|a| &a.version)),
            wire_name(&m.state),
            m.last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    if !d.events.is_empty() {
        out.push_str("recent events:\n");
        for e in &d.events {
            let m = &e.message;
            out.push_str(&format!(
                "  {:>9}  {:<14} {} {}\n",
                ago(Some(e.at)),
                wire_name(&m.kind),
                or_dash(m.target.as_ref()),
                m.detail.as_deref().unwrap_or("")
            ));
        }
    }
    out
}

pub async fn device_remove(client: &Client, id: &str) -> anyhow::Result<()> {
    client
        .call(
            Method::DELETE,
            &format!("/api/v1/devices/{}", urlencode(id)),
            "removing the device",
        )
        .await?;
    println!("removed {id}; its credential no longer works");
    Ok(())
}

pub async fn device_assign(client: &Client, id: &str, models: &[String]) -> anyhow::Result<()> {
    let models = models
        .iter()
        .map(|m| {
            m.split_once('=')
                .map(|(model, version)| DesiredVersion {
                    model: model.to_owned(),
                    version: version.to_owned(),
                })
                .ok_or_else(|| anyhow!("{m:?}: expected MODEL=VERSION"))
        })
        .collect::<anyhow::Result<_>>()?;
    let desired: Desired = client
        .send_json(
            Method::PUT,
            &format!("/api/v1/devices/{}/desired", urlencode(id)),
            &DesiredRequest { models },
            "setting desired state",
        )
        .await?;
    println!("{id}: desired revision {}", desired.revision);
    Ok(())
}

pub async fn groups(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let list: GroupList = client.get("/api/v1/groups", "listing groups").await?;
    if as_json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .groups
        .iter()
        .map(|g| vec![g.name.clone(), g.devices.to_string()])
        .collect();
    print!("{}", table(&["GROUP", "DEVICES"], &rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_need_key_and_value() {
        assert_eq!(
            parse_tags(&["site=north".into()]).unwrap(),
            BTreeMap::from([("site".to_string(), "north".to_string())])
        );
        assert!(parse_tags(&["site".into()]).is_err());
    }
}
