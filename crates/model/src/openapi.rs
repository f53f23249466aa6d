//! OpenAPI schemas the `ToSchema` derive cannot get right by itself (feature
//! `openapi`; the controller serves the document).
//!
//! The objects refuse unknown fields (`deny_unknown_fields`), so their schemas
//! say `additionalProperties: false`. Where serde writes an object's fields
//! together with others — a `flatten`ed field, or the `kind` tag of
//! [`Object`] — the schema is an `allOf`, and a closed member would refuse the
//! other members' fields: those places take the object's schema inline with
//! `additionalProperties` dropped ([`open`]).

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::objects::*;
use crate::state::Object;

/// `T`'s schema, inline, without `additionalProperties: false`.
pub fn open<T: PartialSchema>() -> RefOr<Schema> {
    let mut schema = T::schema();
    if let RefOr::T(Schema::Object(o)) = &mut schema {
        o.additional_properties = None;
    }
    schema
}

/// The schema of a flattened [`VipSpec`] (in [`Vip`], and the controller's view of a VIP).
pub fn vip_spec_flattened() -> RefOr<Schema> {
    open::<VipSpec>()
}

/// The schema of [`Object`]'s variant `kind` holding a `T`: `T`'s fields and `kind`.
fn tagged<T: PartialSchema>(kind: &str) -> RefOr<Schema> {
    let tag = ObjectBuilder::new()
        .property("kind", ObjectBuilder::new().schema_type(Type::String).enum_values(Some([kind])))
        .required("kind");
    AllOfBuilder::new().item(open::<T>()).item(tag).into()
}

/// `AnyObject`: what `#[serde(tag = "kind", rename_all = "lowercase")]` makes of [`Object`].
impl PartialSchema for Object {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(tagged::<Vpc>("vpc"))
            .item(tagged::<Subnet>("subnet"))
            .item(tagged::<Chassis>("chassis"))
            .item(tagged::<Port>("port"))
            .item(tagged::<Vip>("vip"))
            .item(tagged::<Replicator>("replicator"))
            .item(tagged::<OwnershipChange>("history"))
            .item(tagged::<VrrpRouter>("router"))
            .description(Some("Any object, with its `kind` beside its fields."))
            .into()
    }
}

/// Does not compile when [`Object`] gains a variant: add it to the schema above too.
#[allow(dead_code)]
fn every_variant_is_in_the_schema(o: &Object) {
    match o {
        Object::Vpc(_)
        | Object::Subnet(_)
        | Object::Chassis(_)
        | Object::Port(_)
        | Object::Vip(_)
        | Object::Replicator(_)
        | Object::History(_)
        | Object::Router(_) => {}
        // Claim arbitration's bookkeeping is never sent, nor served as an object.
        Object::Arbitration(_) => {}
    }
}

impl ToSchema for Object {
    fn name() -> Cow<'static, str> {
        // Not `Object`: a free-form object to the derive, and a keyword in many languages.
        Cow::Borrowed("AnyObject")
    }

    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        // The schemas the inlined variants refer to.
        <Vpc as ToSchema>::schemas(out);
        <Subnet as ToSchema>::schemas(out);
        <Chassis as ToSchema>::schemas(out);
        <Port as ToSchema>::schemas(out);
        <Vip as ToSchema>::schemas(out);
        <Replicator as ToSchema>::schemas(out);
        <OwnershipChange as ToSchema>::schemas(out);
        <VrrpRouter as ToSchema>::schemas(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind serde writes is one the schema lists, and the other way round.
    #[test]
    fn any_object_lists_every_kind() {
        let schema = serde_json::to_value(Object::schema()).unwrap();
        let mut listed: Vec<String> = schema["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["allOf"][1]["properties"]["kind"]["enum"][0].as_str().unwrap().to_string())
            .collect();
        let owner = Owner {
            port: "p".into(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            chassis: "c".into(),
            generation: 1,
            since: 0,
        };
        let spec = VipSpec {
            name: "v".into(),
            vpc: "a".into(),
            subnet: "s".into(),
            ip: "10.0.0.5".parse().unwrap(),
            members: vec![],
        };
        let objects = [
            Object::Vpc(Vpc {
                name: "a".into(),
                vni: 1,
                bum: BumMode::Headend,
                arp_suppression: true,
                assist: true,
                encap: Encap::Vxlan,
            }),
            Object::Subnet(Subnet {
                vpc: "a".into(),
                name: "s".into(),
                cidr: "10.0.0.0/24".parse().unwrap(),
                gateway: None,
            }),
            Object::Chassis(Chassis {
                name: "c".into(),
                underlay_ip: "172.31.0.1".parse().unwrap(),
                role: Role::Gateway,
                dataplane: Dataplane::Ovs,
                liveness: Some(Liveness { alive: false, since_ms: 2, last_heard_ms: 1 }),
            }),
            Object::Port(Port::vm(
                "p",
                "a",
                "s",
                "c",
                "02:00:00:00:00:01".parse().unwrap(),
                "10.0.0.4".parse().unwrap(),
            )),
            Object::Vip(Vip::new(spec)),
            Object::Replicator(Replicator { name: "r".into(), address: "172.31.1.1:4789".parse().unwrap() }),
            Object::History(OwnershipChange {
                vip: "v".into(),
                generation: 1,
                owner,
                previous_port: None,
                source: ClaimSource::Agent,
                observed_at: 0,
                accepted_at: 0,
                actor: Some("agent:hv1".into()),
            }),
            Object::Router(VrrpRouter {
                vpc: "a".into(),
                id: "1-ipv4".into(),
                vrid: 1,
                version: 3,
                master: VrrpMaster {
                    ip: "10.0.0.4".parse().unwrap(),
                    mac: "02:00:00:00:00:01".parse().unwrap(),
                    port: "p".into(),
                    chassis: "c".into(),
                },
                priority: 150,
                interval_cs: 10,
                addresses: vec!["10.0.0.5".parse().unwrap()],
                destinations: vec!["224.0.0.18".parse().unwrap()],
                auth_type: 0,
                observed_at: 0,
                assists: 0,
                last_assist: None,
            }),
        ];
        let mut written: Vec<String> =
            objects.iter().map(|o| serde_json::to_value(o).unwrap()["kind"].as_str().unwrap().to_string()).collect();
        listed.sort();
        written.sort();
        assert_eq!(listed, written);
        // Every variant holds a type whose schema is an object or an allOf of objects.
        for v in schema["oneOf"].as_array().unwrap() {
            let body = &v["allOf"][0];
            assert!(body["properties"].is_object() || body["allOf"].is_array(), "{body}");
            assert!(body.get("additionalProperties").is_none(), "{body}");
        }
    }
}
