//! Property tests: everything encodes and decodes back to itself, cutting an
//! encoding short is an error, and no input makes a decoder panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::collection::vec;
use proptest::prelude::*;
use vipcast_openflow::*;
use vipcast_packet::MacAddr;

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}

fn v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn v6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

/// (class, field) pairs this codec names; an `Unknown` must avoid them.
fn is_known(class: u16, field: u8) -> bool {
    match class {
        0x8000 => matches!(field, 0 | 2..=6 | 10..=12 | 21..=27 | 29..=33 | 38),
        0x0001 => matches!(field, 0..=7 | 31 | 32),
        0x1000 => matches!(field, 1 | 2),
        _ => false,
    }
}

fn unknown_oxm() -> impl Strategy<Value = OxmField> {
    (prop_oneof![Just(0x8000u16), Just(0x0001), Just(0x0000), Just(0xffff), any::<u16>()], 0u8..=0x7f)
        .prop_filter("named field", |(class, field)| !is_known(*class, *field))
        .prop_flat_map(|(class, field)| {
            (any::<bool>(), vec(any::<u8>(), 0..24)).prop_map(move |(hasmask, value)| OxmField::Unknown {
                class,
                field,
                hasmask,
                value,
            })
        })
}

fn oxm() -> impl Strategy<Value = OxmField> {
    prop_oneof![
        any::<u32>().prop_map(OxmField::InPort),
        (any::<u64>(), any::<Option<u64>>()).prop_map(|(value, mask)| OxmField::Metadata { value, mask }),
        (mac(), proptest::option::of(mac())).prop_map(|(value, mask)| OxmField::EthDst { value, mask }),
        (mac(), proptest::option::of(mac())).prop_map(|(value, mask)| OxmField::EthSrc { value, mask }),
        any::<u16>().prop_map(OxmField::EthType),
        (any::<u16>(), any::<Option<u16>>()).prop_map(|(value, mask)| OxmField::VlanVid { value, mask }),
        any::<u8>().prop_map(OxmField::IpProto),
        (v4(), proptest::option::of(v4())).prop_map(|(value, mask)| OxmField::Ipv4Src { value, mask }),
        (v4(), proptest::option::of(v4())).prop_map(|(value, mask)| OxmField::Ipv4Dst { value, mask }),
        (v6(), proptest::option::of(v6())).prop_map(|(value, mask)| OxmField::Ipv6Src { value, mask }),
        (v6(), proptest::option::of(v6())).prop_map(|(value, mask)| OxmField::Ipv6Dst { value, mask }),
        any::<u8>().prop_map(OxmField::Icmpv6Type),
        any::<u8>().prop_map(OxmField::Icmpv6Code),
        any::<u16>().prop_map(OxmField::ArpOp),
        (v4(), proptest::option::of(v4())).prop_map(|(value, mask)| OxmField::ArpSpa { value, mask }),
        (v4(), proptest::option::of(v4())).prop_map(|(value, mask)| OxmField::ArpTpa { value, mask }),
        (mac(), proptest::option::of(mac())).prop_map(|(value, mask)| OxmField::ArpSha { value, mask }),
        (mac(), proptest::option::of(mac())).prop_map(|(value, mask)| OxmField::ArpTha { value, mask }),
        v6().prop_map(OxmField::Ipv6NdTarget),
        mac().prop_map(OxmField::Ipv6NdSll),
        mac().prop_map(OxmField::Ipv6NdTll),
        any::<u32>().prop_map(OxmField::NdReserved),
        any::<u8>().prop_map(OxmField::NdOptionsType),
        (any::<u64>(), any::<Option<u64>>()).prop_map(|(value, mask)| OxmField::TunnelId { value, mask }),
        (v4(), proptest::option::of(v4())).prop_map(|(value, mask)| OxmField::TunIpv4Src { value, mask }),
        (v4(), proptest::option::of(v4())).prop_map(|(value, mask)| OxmField::TunIpv4Dst { value, mask }),
        (0u8..=7, any::<u32>(), any::<Option<u32>>()).prop_map(|(index, value, mask)| OxmField::Reg {
            index,
            value,
            mask
        }),
        unknown_oxm(),
    ]
}

fn a_match() -> impl Strategy<Value = Match> {
    vec(oxm(), 0..6).prop_map(|fields| Match { fields })
}

/// A body whose length makes `4 + len` a multiple of 8.
fn padded_body(max_words: usize) -> impl Strategy<Value = Vec<u8>> {
    (0..=max_words).prop_flat_map(|words| vec(any::<u8>(), 4 + 8 * words))
}

fn action() -> impl Strategy<Value = Action> {
    let header = any::<u32>().prop_map(OxmHeader);
    prop_oneof![
        (any::<u32>(), any::<u16>()).prop_map(|(port, max_len)| Action::Output { port, max_len }),
        any::<u32>().prop_map(Action::Group),
        oxm().prop_map(Action::SetField),
        any::<u16>().prop_map(Action::PushVlan),
        Just(Action::PopVlan),
        (any::<u16>(), any::<u16>(), any::<u16>(), header.clone(), header.clone())
            .prop_map(|(n_bits, src_ofs, dst_ofs, src, dst)| Action::RegMove { n_bits, src_ofs, dst_ofs, src, dst }),
        (0u16..1024, 1u8..=64, header, any::<u64>()).prop_map(|(ofs, n_bits, dst, value)| Action::RegLoad {
            ofs,
            n_bits,
            dst,
            value
        }),
        (any::<u16>(), any::<u8>()).prop_map(|(in_port, table)| Action::ResubmitTable { in_port, table }),
        (any::<u16>().prop_filter("named action", |t| ![0, 17, 18, 22, 25, 0xffff].contains(t)), padded_body(3))
            .prop_map(|(action_type, body)| Action::Unknown { action_type, body }),
        (any::<u32>().prop_filter("nicira", |e| *e != 0x2320), padded_body(3)).prop_map(|(experimenter, mut body)| {
            body.splice(0..4, experimenter.to_be_bytes());
            Action::Unknown { action_type: 0xffff, body }
        }),
    ]
}

fn actions() -> impl Strategy<Value = Vec<Action>> {
    vec(action(), 0..5)
}

fn instruction() -> impl Strategy<Value = Instruction> {
    prop_oneof![
        any::<u8>().prop_map(Instruction::GotoTable),
        (any::<u64>(), any::<u64>()).prop_map(|(metadata, mask)| Instruction::WriteMetadata { metadata, mask }),
        actions().prop_map(Instruction::WriteActions),
        actions().prop_map(Instruction::ApplyActions),
        Just(Instruction::ClearActions),
        (any::<u16>().prop_filter("named instruction", |t| !(1..=5).contains(t)), padded_body(2))
            .prop_map(|(instruction_type, body)| Instruction::Unknown { instruction_type, body }),
    ]
}

fn flow_mod() -> impl Strategy<Value = FlowMod> {
    let command = prop_oneof![
        Just(FlowModCommand::Add),
        Just(FlowModCommand::Modify),
        Just(FlowModCommand::ModifyStrict),
        Just(FlowModCommand::Delete),
        Just(FlowModCommand::DeleteStrict),
    ];
    (
        (any::<u64>(), any::<u64>(), any::<u8>(), command, any::<u16>(), any::<u16>(), any::<u16>()),
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u16>()),
        a_match(),
        vec(instruction(), 0..4),
    )
        .prop_map(
            |(
                (cookie, cookie_mask, table_id, command, idle_timeout, hard_timeout, priority),
                (buffer_id, out_port, out_group, flags),
                match_,
                instructions,
            )| FlowMod {
                cookie,
                cookie_mask,
                table_id,
                command,
                idle_timeout,
                hard_timeout,
                priority,
                buffer_id,
                out_port,
                out_group,
                flags,
                match_,
                instructions,
            },
        )
}

fn group_mod() -> impl Strategy<Value = GroupMod> {
    let command = prop_oneof![Just(GroupModCommand::Add), Just(GroupModCommand::Modify), Just(GroupModCommand::Delete)];
    let group_type = prop_oneof![
        Just(GroupType::All),
        Just(GroupType::Select),
        Just(GroupType::Indirect),
        Just(GroupType::FastFailover)
    ];
    let bucket = (any::<u16>(), any::<u32>(), any::<u32>(), actions())
        .prop_map(|(weight, watch_port, watch_group, actions)| Bucket { weight, watch_port, watch_group, actions });
    (command, group_type, any::<u32>(), vec(bucket, 0..4))
        .prop_map(|(command, group_type, group_id, buckets)| GroupMod { command, group_type, group_id, buckets })
}

fn packet_in() -> impl Strategy<Value = PacketIn> {
    (any::<u32>(), any::<u16>(), any::<u8>(), any::<u8>(), any::<u64>(), a_match(), vec(any::<u8>(), 0..128)).prop_map(
        |(buffer_id, total_len, reason, table_id, cookie, match_, data)| PacketIn {
            buffer_id,
            total_len,
            reason,
            table_id,
            cookie,
            match_,
            data,
        },
    )
}

fn packet_out() -> impl Strategy<Value = PacketOut> {
    (any::<u32>(), any::<u32>(), actions(), vec(any::<u8>(), 0..128))
        .prop_map(|(buffer_id, in_port, actions, data)| PacketOut { buffer_id, in_port, actions, data })
}

fn flow_stats() -> impl Strategy<Value = FlowStats> {
    (
        (any::<u8>(), any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>(), any::<u16>(), any::<u16>()),
        (any::<u64>(), any::<u64>(), any::<u64>()),
        a_match(),
        vec(instruction(), 0..3),
    )
        .prop_map(
            |(
                (table_id, duration_sec, duration_nsec, priority, idle_timeout, hard_timeout, flags),
                (cookie, packet_count, byte_count),
                match_,
                instructions,
            )| FlowStats {
                table_id,
                duration_sec,
                duration_nsec,
                priority,
                idle_timeout,
                hard_timeout,
                flags,
                cookie,
                packet_count,
                byte_count,
                match_,
                instructions,
            },
        )
}

fn port() -> impl Strategy<Value = Port> {
    (any::<u32>(), mac(), any::<[u8; 16]>(), any::<[u32; 8]>()).prop_map(|(port_no, hw_addr, name, v)| Port {
        port_no,
        hw_addr,
        name,
        config: v[0],
        state: v[1],
        curr: v[2],
        advertised: v[3],
        supported: v[4],
        peer: v[5],
        curr_speed: v[6],
        max_speed: v[7],
    })
}

fn body() -> impl Strategy<Value = Body> {
    let bytes = || vec(any::<u8>(), 0..64);
    let known_types = [0u8, 1, 2, 3, 5, 6, 9, 10, 12, 13, 14, 15, 18, 19, 20, 21];
    prop_oneof![
        (any::<u8>(), any::<Option<u32>>()).prop_map(|(version, bitmap)| Body::Hello(Hello { version, bitmap })),
        (any::<u16>(), any::<u16>(), bytes()).prop_map(|(err_type, code, data)| Body::Error(ErrorMsg {
            err_type,
            code,
            data
        })),
        bytes().prop_map(Body::EchoRequest),
        bytes().prop_map(Body::EchoReply),
        Just(Body::FeaturesRequest),
        (any::<u64>(), any::<u32>(), any::<u8>(), any::<u8>(), any::<u32>()).prop_map(
            |(datapath_id, n_buffers, n_tables, auxiliary_id, capabilities)| Body::FeaturesReply(FeaturesReply {
                datapath_id,
                n_buffers,
                n_tables,
                auxiliary_id,
                capabilities
            })
        ),
        (any::<u16>(), any::<u16>())
            .prop_map(|(flags, miss_send_len)| Body::SetConfig(SwitchConfig { flags, miss_send_len })),
        packet_in().prop_map(Body::PacketIn),
        packet_out().prop_map(Body::PacketOut),
        flow_mod().prop_map(Body::FlowMod),
        group_mod().prop_map(Body::GroupMod),
        (any::<u16>(), any::<u8>(), any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>(), a_match()).prop_map(
            |(flags, table_id, out_port, out_group, cookie, cookie_mask, match_)| {
                Body::MultipartRequest(MultipartRequest {
                    flags,
                    body: MultipartRequestBody::Flow(FlowStatsRequest {
                        table_id,
                        out_port,
                        out_group,
                        cookie,
                        cookie_mask,
                        match_,
                    }),
                })
            }
        ),
        (any::<u16>(), vec(flow_stats(), 0..3)).prop_map(|(flags, flows)| Body::MultipartReply(MultipartReply {
            flags,
            body: MultipartReplyBody::Flow(flows)
        })),
        (any::<u16>(), vec(port(), 0..3)).prop_map(|(flags, ports)| Body::MultipartReply(MultipartReply {
            flags,
            body: MultipartReplyBody::PortDesc(ports)
        })),
        any::<u16>()
            .prop_map(|flags| Body::MultipartRequest(MultipartRequest { flags, body: MultipartRequestBody::PortDesc })),
        any::<u16>().prop_map(|flags| Body::MultipartRequest(MultipartRequest {
            flags,
            body: MultipartRequestBody::GroupDesc
        })),
        (any::<u16>(), vec(group_mod(), 0..3)).prop_map(|(flags, groups)| Body::MultipartReply(MultipartReply {
            flags,
            body: MultipartReplyBody::GroupDesc(
                groups
                    .into_iter()
                    .map(|g| GroupDesc { group_type: g.group_type, group_id: g.group_id, buckets: g.buckets })
                    .collect()
            )
        })),
        (any::<u8>(), port()).prop_map(|(reason, port)| Body::PortStatus(PortStatus { reason, port })),
        (any::<u16>(), any::<u16>().prop_filter("parsed types", |t| *t != 1 && *t != 7 && *t != 13), bytes()).prop_map(
            |(flags, mp_type, body)| {
                Body::MultipartReply(MultipartReply { flags, body: MultipartReplyBody::Other { mp_type, body } })
            }
        ),
        Just(Body::BarrierRequest),
        Just(Body::BarrierReply),
        (any::<u8>().prop_filter("named type", move |t| !known_types.contains(t)), bytes())
            .prop_map(|(msg_type, body)| Body::Other { msg_type, body }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (any::<u32>(), body()).prop_map(|(xid, body)| Message { xid, body })
}

/// Asserts that a successfully decoded message encodes to bytes that decode
/// to the same message.
fn reencodes(msg: &Message) {
    let again = msg.to_bytes().unwrap();
    assert_eq!(&Message::decode(&again).unwrap(), msg);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn oxm_round_trip(field in oxm()) {
        let mut out = Vec::new();
        field.encode(&mut out).unwrap();
        prop_assert_eq!(out.len(), field.wire_len());
        prop_assert_eq!(OxmField::decode(&out).unwrap(), (field.clone(), out.len()));
        // The header says what the encoding holds.
        let header = field.header().unwrap();
        prop_assert_eq!(usize::from(header.length()) + 4, out.len());
        for cut in 0..out.len() {
            prop_assert!(OxmField::decode(&out[..cut]).is_err(), "cut at {}", cut);
        }
    }

    #[test]
    fn match_round_trip(m in a_match()) {
        let mut out = Vec::new();
        m.encode(&mut out).unwrap();
        prop_assert_eq!(out.len() % 8, 0);
        prop_assert_eq!(out.len(), m.wire_len());
        prop_assert_eq!(Match::decode(&out).unwrap(), (m, out.len()));
        for cut in 0..out.len() {
            prop_assert!(Match::decode(&out[..cut]).is_err(), "cut at {}", cut);
        }
    }

    #[test]
    fn action_round_trip(action in action()) {
        let mut out = Vec::new();
        action.encode(&mut out).unwrap();
        prop_assert_eq!(out.len() % 8, 0);
        prop_assert_eq!(out.len(), action.wire_len());
        prop_assert_eq!(Action::decode(&out).unwrap(), (action, out.len()));
        for cut in 0..out.len() {
            prop_assert!(Action::decode(&out[..cut]).is_err(), "cut at {}", cut);
        }
    }

    #[test]
    fn action_list_round_trip(list in actions()) {
        let mut out = Vec::new();
        encode_actions(&list, &mut out).unwrap();
        prop_assert_eq!(decode_actions(&out).unwrap(), list);
    }

    #[test]
    fn instruction_round_trip(instruction in instruction()) {
        let mut out = Vec::new();
        instruction.encode(&mut out).unwrap();
        prop_assert_eq!(out.len() % 8, 0);
        prop_assert_eq!(Instruction::decode(&out).unwrap(), (instruction, out.len()));
        for cut in 0..out.len() {
            prop_assert!(Instruction::decode(&out[..cut]).is_err(), "cut at {}", cut);
        }
    }

    #[test]
    fn flow_mod_round_trip(flow in flow_mod(), xid in any::<u32>()) {
        let msg = Message::new(xid, Body::FlowMod(flow.clone()));
        let bytes = msg.to_bytes().unwrap();
        prop_assert_eq!(decode_message(&bytes).unwrap(), Some((msg, bytes.len())));
        // Shortening the message (and its length field) is an error unless
        // the cut falls between two instructions.
        let mut boundaries = vec![48 + flow.match_.wire_len()];
        for i in &flow.instructions {
            let mut one = Vec::new();
            i.encode(&mut one).unwrap();
            boundaries.push(boundaries[boundaries.len() - 1] + one.len());
        }
        for cut in 8..bytes.len() {
            let mut short = bytes[..cut].to_vec();
            short[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
            let decoded = decode_message(&short);
            if boundaries.contains(&cut) {
                prop_assert!(decoded.is_ok(), "cut at {} between instructions: {:?}", cut, decoded);
            } else {
                prop_assert!(decoded.is_err(), "cut at {} decoded: {:?}", cut, decoded);
            }
        }
    }

    #[test]
    fn group_mod_round_trip(group in group_mod(), xid in any::<u32>()) {
        let msg = Message::new(xid, Body::GroupMod(group));
        let bytes = msg.to_bytes().unwrap();
        prop_assert_eq!(decode_message(&bytes).unwrap(), Some((msg, bytes.len())));
    }

    #[test]
    fn packet_in_round_trip(pin in packet_in(), xid in any::<u32>()) {
        let msg = Message::new(xid, Body::PacketIn(pin.clone()));
        let bytes = msg.to_bytes().unwrap();
        prop_assert_eq!(decode_message(&bytes).unwrap(), Some((msg, bytes.len())));
        // Anything cut out of the fixed part, the match or the pad is an error.
        let fixed = 8 + 16 + pin.match_.wire_len() + 2;
        for cut in 8..fixed {
            let mut short = bytes[..cut].to_vec();
            short[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
            prop_assert!(decode_message(&short).is_err(), "cut at {}", cut);
        }
    }

    #[test]
    fn packet_out_round_trip(pout in packet_out(), xid in any::<u32>()) {
        let msg = Message::new(xid, Body::PacketOut(pout.clone()));
        let bytes = msg.to_bytes().unwrap();
        prop_assert_eq!(decode_message(&bytes).unwrap(), Some((msg, bytes.len())));
        let fixed = 8 + 16 + pout.actions.iter().map(Action::wire_len).sum::<usize>();
        for cut in 8..fixed {
            let mut short = bytes[..cut].to_vec();
            short[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
            prop_assert!(decode_message(&short).is_err(), "cut at {}", cut);
        }
    }

    #[test]
    fn any_message_round_trips_and_frames(msgs in vec(message(), 1..5), chunk in 1usize..64) {
        let mut stream = Vec::new();
        for m in &msgs {
            let bytes = m.to_bytes().unwrap();
            prop_assert_eq!(Message::decode(&bytes).unwrap(), m.clone());
            // Every strict prefix is incomplete, never a message or an error.
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode_message(&bytes[..cut]), Ok(None));
            }
            stream.extend_from_slice(&bytes);
        }
        let mut framer = Framer::new();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            framer.push(piece);
            while let Some(m) = framer.next_message().unwrap() {
                got.push(m);
            }
        }
        prop_assert_eq!(got, msgs);
        prop_assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn decoders_never_panic_on_bytes(bytes in vec(any::<u8>(), 0..256)) {
        if let Ok(Some((msg, _))) = decode_message(&bytes) {
            reencodes(&msg);
        }
        let _ = Match::decode(&bytes);
        let _ = OxmField::decode(&bytes);
        let _ = Action::decode(&bytes);
        let _ = decode_actions(&bytes);
        let _ = Instruction::decode(&bytes);
        let _ = decode_instructions(&bytes);
    }

    #[test]
    fn decoders_never_panic_behind_a_good_header(
        msg_type in 0u8..24,
        xid in any::<u32>(),
        body in vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = vec![4, msg_type];
        bytes.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
        bytes.extend_from_slice(&xid.to_be_bytes());
        bytes.extend_from_slice(&body);
        if let Ok(msg) = Message::decode(&bytes) {
            reencodes(&msg);
        }
    }

    #[test]
    fn mutated_messages_never_panic(msg in message(), flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut bytes = msg.to_bytes().unwrap();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(Some((decoded, _))) = decode_message(&bytes) {
            reencodes(&decoded);
        }
    }
}
