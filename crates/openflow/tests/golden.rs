//! Byte vectors written out by hand from the OpenFlow 1.3.5 spec and Open
//! vSwitch's Nicira extension layouts, checked in both directions.

use std::net::Ipv4Addr;

use vipcast_openflow::action::{NX_RESUBMIT_IN_PORT, OFPCML_NO_BUFFER};
use vipcast_openflow::error_msg::{OFPET_BAD_ACTION, OFPET_EXPERIMENTER, OFPET_FLOW_MOD_FAILED};
use vipcast_openflow::message::{OFPC_FLOW_STATS, OFPC_PORT_STATS, OFPR_ACTION};
use vipcast_openflow::multipart::OFPTT_ALL;
use vipcast_openflow::port::{OFPPC_PORT_DOWN, OFPPR_MODIFY, OFPPS_LINK_DOWN};
use vipcast_openflow::*;
use vipcast_packet::MacAddr;

/// Parses a hex string; spaces and `|` separate groups.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits in {s:?}");
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

/// `msg` encodes to `bytes`, and `bytes` decode to `msg`.
fn both_ways(msg: &Message, bytes: &[u8]) {
    assert_eq!(msg.to_bytes().unwrap(), bytes, "encoding of {msg:?}");
    assert_eq!(decode_message(bytes).unwrap(), Some((msg.clone(), bytes.len())));
}

const MAC: MacAddr = MacAddr([0x02, 0x00, 0x5e, 0x00, 0x01, 0x0a]);

#[test]
fn hello_plain_and_with_bitmap() {
    both_ways(&Message::new(1, Body::Hello(Hello { version: 4, bitmap: None })), &hex("04 00 0008 00000001"));
    both_ways(&Message::new(7, Body::Hello(Hello::default())), &hex("04 00 0010 00000007 | 0001 0008 00000010"));
}

#[test]
fn hello_from_a_newer_switch_negotiates_1_3() {
    // Version 0x06 with a bitmap naming 1.0, 1.3, 1.4, 1.5 (0x72), then an
    // unknown element of type 9 carrying 3 bytes padded to 8.
    let bytes = hex("06 00 0018 0000002a | 0001 0008 00000072 | 0009 0007 aabbcc 00");
    let (msg, used) = decode_message(&bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    let Body::Hello(hello) = msg.body else { panic!("not a hello: {msg:?}") };
    assert_eq!(hello, Hello { version: 6, bitmap: Some(0x72) });
    assert!(hello.supports_1_3());
    // A 1.0-only switch cannot.
    assert!(!Hello { version: 1, bitmap: None }.supports_1_3());
    assert!(!Hello { version: 6, bitmap: Some(0x02) }.supports_1_3());
}

#[test]
fn hello_with_a_malformed_element_is_tolerated() {
    let bytes = hex("04 00 000e 00000001 | 0001 0002 0000 0000 00");
    let (msg, _) = decode_message(&bytes).unwrap().unwrap();
    assert_eq!(msg.body, Body::Hello(Hello { version: 4, bitmap: None }));
}

#[test]
fn echo_features_barrier_set_config() {
    both_ways(&Message::new(2, Body::EchoRequest(b"ping".to_vec())), &hex("04 02 000c 00000002 70696e67"));
    both_ways(&Message::new(2, Body::EchoReply(vec![])), &hex("04 03 0008 00000002"));
    both_ways(&Message::new(3, Body::FeaturesRequest), &hex("04 05 0008 00000003"));
    both_ways(
        &Message::new(
            3,
            Body::FeaturesReply(FeaturesReply {
                datapath_id: 0x0000_0242_ac11_0002,
                n_buffers: 0,
                n_tables: 254,
                auxiliary_id: 0,
                capabilities: OFPC_FLOW_STATS | OFPC_PORT_STATS | 0x40 | 0x08 | 0x02,
            }),
        ),
        &hex("04 06 0020 00000003 | 00000242ac110002 | 00000000 | fe 00 0000 | 0000004f | 00000000"),
    );
    both_ways(&Message::new(4, Body::BarrierRequest), &hex("04 14 0008 00000004"));
    both_ways(&Message::new(4, Body::BarrierReply), &hex("04 15 0008 00000004"));
    both_ways(
        &Message::new(5, Body::SetConfig(SwitchConfig { flags: 0, miss_send_len: OFPCML_NO_BUFFER })),
        &hex("04 09 000c 00000005 0000 ffff"),
    );
}

#[test]
fn flow_mod_in_port_to_output() {
    let flow = FlowMod::add(
        0,
        100,
        Match::new().with(OxmField::InPort(1)),
        vec![Instruction::ApplyActions(vec![Action::output(2)])],
    );
    let bytes = hex("04 0e 0058 00000010 \
         | 0000000000000000 | 0000000000000000 | 00 00 | 0000 0000 | 0064 | ffffffff | ffffffff | ffffffff \
         | 0000 0000 \
         | 0001 000c 80000004 00000001 00000000 \
         | 0004 0018 00000000 | 0000 0010 00000002 0000 000000000000");
    both_ways(&Message::new(0x10, Body::FlowMod(flow)), &bytes);
}

#[test]
fn flow_mod_delete_every_field_set() {
    let flow = FlowMod {
        cookie: 0x0102_0304_0506_0708,
        cookie_mask: u64::MAX,
        table_id: 3,
        command: FlowModCommand::DeleteStrict,
        idle_timeout: 10,
        hard_timeout: 20,
        priority: 0x8000,
        buffer_id: 0x1234,
        out_port: 5,
        out_group: 6,
        flags: 0x0001,
        match_: Match::new(),
        instructions: vec![Instruction::GotoTable(4), Instruction::ClearActions],
    };
    let bytes = hex("04 0e 0048 00000011 \
         | 0102030405060708 | ffffffffffffffff | 03 04 | 000a 0014 | 8000 | 00001234 | 00000005 | 00000006 \
         | 0001 0000 \
         | 0001 0004 00000000 \
         | 0001 0008 04 000000 | 0005 0008 00000000");
    both_ways(&Message::new(0x11, Body::FlowMod(flow)), &bytes);
}

#[test]
fn oxm_headers() {
    assert_eq!(OxmHeader::ETH_DST.0, 0x8000_0606);
    assert_eq!(OxmHeader::ETH_SRC.0, 0x8000_0806);
    assert_eq!(OxmHeader::ARP_SPA.0, 0x8000_2c04);
    assert_eq!(OxmHeader::ARP_TPA.0, 0x8000_2e04);
    assert_eq!(OxmHeader::ARP_SHA.0, 0x8000_3006);
    assert_eq!(OxmHeader::ARP_THA.0, 0x8000_3206);
    assert_eq!(OxmHeader::TUNNEL_ID.0, 0x8000_4c08);
    assert_eq!(OxmHeader::nx_reg(0).0, 0x0001_0004);
    assert_eq!(OxmHeader::nx_reg(7).0, 0x0001_0e04);
    assert_eq!(OxmHeader::NX_TUN_IPV4_SRC.0, 0x0001_3e04);
    assert_eq!(OxmHeader::NX_TUN_IPV4_DST.0, 0x0001_4004);
    assert_eq!(OxmHeader::ETH_DST.bits(), 48);
    let h = OxmHeader(0x8000_070c);
    assert_eq!((h.class(), h.field(), h.hasmask(), h.length(), h.bits()), (0x8000, 3, true, 12, 48));
}

/// Encodes one field and checks the bytes, then decodes them back.
fn oxm_both_ways(field: OxmField, bytes: &[u8]) {
    let mut out = Vec::new();
    field.encode(&mut out).unwrap();
    assert_eq!(out, bytes, "encoding of {field:?}");
    assert_eq!(OxmField::decode(bytes).unwrap(), (field, bytes.len()));
}

#[test]
fn oxm_fields() {
    // eth_dst 01:00:00:00:00:00/01:00:00:00:00:00 (multicast bit): has-mask
    // bit set, length 12, value then mask.
    let mcast = MacAddr([1, 0, 0, 0, 0, 0]);
    oxm_both_ways(OxmField::EthDst { value: mcast, mask: Some(mcast) }, &hex("8000070c 010000000000 010000000000"));
    oxm_both_ways(OxmField::eth_dst(MAC), &hex("80000606 02005e00010a"));
    oxm_both_ways(OxmField::EthType(0x0806), &hex("80000a02 0806"));
    oxm_both_ways(OxmField::VlanVid { value: 0x1000 | 10, mask: None }, &hex("80000c02 100a"));
    oxm_both_ways(OxmField::IpProto(17), &hex("80001401 11"));
    oxm_both_ways(
        OxmField::Ipv4Dst { value: Ipv4Addr::new(10, 0, 0, 0), mask: Some(Ipv4Addr::new(255, 0, 0, 0)) },
        &hex("8000190 8 0a000000 ff000000"),
    );
    oxm_both_ways(OxmField::ArpOp(1), &hex("80002a02 0001"));
    oxm_both_ways(OxmField::Icmpv6Type(135), &hex("80003a01 87"));
    oxm_both_ways(OxmField::Icmpv6Code(0), &hex("80003c01 00"));
    oxm_both_ways(
        OxmField::Ipv6NdTarget("fe80::1".parse().unwrap()),
        &hex("80003e10 fe800000000000000000000000000001"),
    );
    oxm_both_ways(OxmField::TunnelId { value: 5000, mask: None }, &hex("80004c08 0000000000001388"));
    oxm_both_ways(
        OxmField::Metadata { value: 1, mask: Some(0xff) },
        &hex("80000510 0000000000000001 00000000000000ff"),
    );
    oxm_both_ways(OxmField::TunIpv4Src { value: Ipv4Addr::new(192, 0, 2, 1), mask: None }, &hex("00013e04 c0000201"));
    oxm_both_ways(
        OxmField::TunIpv4Dst { value: Ipv4Addr::new(192, 0, 2, 2), mask: Some(Ipv4Addr::BROADCAST) },
        &hex("00014108 c0000202 ffffffff"),
    );
    oxm_both_ways(OxmField::Reg { index: 3, value: 0xdead_beef, mask: None }, &hex("00010604 deadbeef"));
    oxm_both_ways(OxmField::Reg { index: 7, value: 1, mask: Some(1) }, &hex("00010f08 00000001 00000001"));
}

#[test]
fn unknown_oxm_fields_are_kept() {
    // tcp_dst (basic field 14) and an experimenter field.
    oxm_both_ways(
        OxmField::Unknown { class: 0x8000, field: 14, hasmask: false, value: vec![0, 80] },
        &hex("80001c02 0050"),
    );
    oxm_both_ways(
        OxmField::Unknown { class: 0xffff, field: 1, hasmask: true, value: hex("00002320 01 02") },
        &hex("ffff0306 00002320 0102"),
    );
    // A known field with a wrong length or a forbidden mask is an error, not unknown.
    assert!(OxmField::decode(&hex("80000005 0000000001")).is_err());
    assert!(OxmField::decode(&hex("80000108 00000001 ffffffff")).is_err());
    assert!(OxmField::decode(&hex("8000070b 010000000000 0100000000")).is_err());
}

#[test]
fn match_padding() {
    let m = Match::new().with(OxmField::EthType(0x0800)).with(OxmField::IpProto(6));
    let mut out = Vec::new();
    m.encode(&mut out).unwrap();
    // 4 + 6 + 5 = 15 -> padded to 16.
    assert_eq!(out, hex("0001 000f 80000a02 0800 80001401 06 00"));
    assert_eq!(Match::decode(&out).unwrap(), (m, 16));
    // The empty match is 4 bytes of header and 4 of padding.
    let mut out = Vec::new();
    Match::new().encode(&mut out).unwrap();
    assert_eq!(out, hex("0001 0004 00000000"));
    // OFPMT_STANDARD (0) is not accepted.
    assert!(Match::decode(&hex("0000 0004 00000000")).is_err());
}

fn action_both_ways(action: Action, bytes: &[u8]) {
    let mut out = Vec::new();
    action.encode(&mut out).unwrap();
    assert_eq!(out, bytes, "encoding of {action:?}");
    assert_eq!(Action::decode(bytes).unwrap(), (action, bytes.len()));
}

#[test]
fn actions() {
    action_both_ways(
        Action::Output { port: OFPP_CONTROLLER, max_len: OFPCML_NO_BUFFER },
        &hex("0000 0010 fffffffd ffff 000000000000"),
    );
    action_both_ways(Action::Group(9), &hex("0016 0008 00000009"));
    action_both_ways(Action::PushVlan(0x8100), &hex("0011 0008 8100 0000"));
    action_both_ways(Action::PopVlan, &hex("0012 0008 00000000"));
    action_both_ways(Action::SetField(OxmField::ArpOp(2)), &hex("0019 0010 80002a02 0002 000000000000"));
    action_both_ways(Action::SetField(OxmField::tunnel_id(42)), &hex("0019 0010 80004c08 000000000000002a"));
    action_both_ways(
        Action::move_field(OxmHeader::ETH_SRC, OxmHeader::ETH_DST),
        &hex("ffff 0018 00002320 0006 | 0030 0000 0000 | 80000806 80000606"),
    );
    // load:0x2->NXM_NX_REG0[0..15]: ofs 0, n_bits 16 -> ofs_nbits 0x000f.
    action_both_ways(
        Action::RegLoad { ofs: 0, n_bits: 16, dst: OxmHeader::nx_reg(0), value: 2 },
        &hex("ffff 0018 00002320 0007 | 000f | 00010004 | 0000000000000002"),
    );
    // load into bits 8..=15 of reg1: ofs 8, n_bits 8 -> (8 << 6) | 7 = 0x0207.
    action_both_ways(
        Action::RegLoad { ofs: 8, n_bits: 8, dst: OxmHeader::nx_reg(1), value: 0xff },
        &hex("ffff 0018 00002320 0007 | 0207 | 00010204 | 00000000000000ff"),
    );
    action_both_ways(
        Action::ResubmitTable { in_port: NX_RESUBMIT_IN_PORT, table: 10 },
        &hex("ffff 0010 00002320 000e | fff8 0a 000000"),
    );
    // Unknown experimenter and unknown standard actions are kept.
    action_both_ways(
        Action::Unknown { action_type: 0xffff, body: hex("00002320 0021 000000000000") },
        &hex("ffff 0010 00002320 0021 000000000000"),
    );
    action_both_ways(Action::Unknown { action_type: 24, body: vec![0; 4] }, &hex("0018 0008 00000000"));
    // An experimenter action as short as its id (Nicira's too: no subtype to read).
    action_both_ways(Action::Unknown { action_type: 0xffff, body: hex("00002320") }, &hex("ffff 0008 00002320"));
    action_both_ways(Action::Unknown { action_type: 0xffff, body: hex("00000000") }, &hex("ffff 0008 00000000"));
}

#[test]
fn action_length_errors() {
    // Length not a multiple of 8, shorter than 8, longer than the buffer.
    assert!(Action::decode(&hex("0000 000c fffffffd ffff 0000")).is_err());
    assert!(Action::decode(&hex("0012 0004 00000000")).is_err());
    assert!(Action::decode(&hex("0000 0018 00000002 0000 000000000000")).is_err());
    // Output with length 8 or 24 is malformed.
    assert!(Action::decode(&hex("0000 0008 00000002")).is_err());
    // reg_move with length 16.
    assert!(Action::decode(&hex("ffff 0010 00002320 0006 0030 0000")).is_err());
    // set_field with an extra 8 bytes of padding.
    assert!(Action::decode(&hex("0019 0018 80002a02 0002 000000000000 0000000000000000")).is_err());
    // reg_load out of range is refused on encode.
    let mut out = Vec::new();
    assert!(Action::RegLoad { ofs: 0, n_bits: 0, dst: OxmHeader::nx_reg(0), value: 0 }.encode(&mut out).is_err());
    assert!(Action::RegLoad { ofs: 1024, n_bits: 1, dst: OxmHeader::nx_reg(0), value: 0 }.encode(&mut out).is_err());
    assert!(Action::Unknown { action_type: 99, body: vec![0; 5] }.encode(&mut out).is_err());
}

#[test]
fn arp_responder_actions() {
    let ip = Ipv4Addr::new(10, 1, 2, 3);
    let actions = arp_responder(MAC, ip);
    let mut out = Vec::new();
    encode_actions(&actions, &mut out).unwrap();
    let expected = hex("ffff 0018 00002320 0006 0030 0000 0000 80000806 80000606 \
         0019 0010 80000806 02005e00010a 0000 \
         0019 0010 80002a02 0002 000000000000 \
         ffff 0018 00002320 0006 0030 0000 0000 80003006 80003206 \
         0019 0010 80003006 02005e00010a 0000 \
         ffff 0018 00002320 0006 0020 0000 0000 80002c04 80002e04 \
         0019 0010 80002c04 0a010203 00000000 \
         0000 0010 fffffff8 0000 000000000000");
    assert_eq!(out, expected);
    assert_eq!(decode_actions(&out).unwrap(), actions);

    let mut m = Vec::new();
    arp_request_match(ip).encode(&mut m).unwrap();
    assert_eq!(m, hex("0001 0018 80000a02 0806 80002a02 0001 80002e04 0a010203"));
}

#[test]
fn instructions() {
    let cases = [
        (Instruction::GotoTable(7), hex("0001 0008 07 000000")),
        (
            Instruction::WriteMetadata { metadata: 0x10, mask: 0xff },
            hex("0002 0018 00000000 0000000000000010 00000000000000ff"),
        ),
        (Instruction::WriteActions(vec![Action::Group(1)]), hex("0003 0010 00000000 0016 0008 00000001")),
        (Instruction::ApplyActions(vec![]), hex("0004 0008 00000000")),
        (Instruction::ClearActions, hex("0005 0008 00000000")),
        // OFPIT_METER is carried as unknown.
        (Instruction::Unknown { instruction_type: 6, body: hex("00000001") }, hex("0006 0008 00000001")),
    ];
    for (instruction, bytes) in cases {
        let mut out = Vec::new();
        instruction.encode(&mut out).unwrap();
        assert_eq!(out, bytes, "encoding of {instruction:?}");
        assert_eq!(Instruction::decode(&bytes).unwrap(), (instruction, bytes.len()));
    }
    assert!(Instruction::decode(&hex("0001 0010 07 000000 0000000000000000")).is_err());
}

#[test]
fn group_mod_all_with_two_buckets() {
    let group = GroupMod {
        command: GroupModCommand::Add,
        group_type: GroupType::All,
        group_id: 1,
        buckets: vec![Bucket::new(vec![Action::output(3)]), Bucket::new(vec![])],
    };
    let bytes = hex("04 0f 0040 00000020 | 0000 00 00 00000001 \
         | 0020 0000 ffffffff ffffffff 00000000 | 0000 0010 00000003 0000 000000000000 \
         | 0010 0000 ffffffff ffffffff 00000000");
    both_ways(&Message::new(0x20, Body::GroupMod(group)), &bytes);
    let ff = GroupMod {
        command: GroupModCommand::Delete,
        group_type: GroupType::FastFailover,
        group_id: OFPG_ALL,
        buckets: vec![Bucket { weight: 0, watch_port: 4, watch_group: OFPG_ANY, actions: vec![] }],
    };
    both_ways(
        &Message::new(0x21, Body::GroupMod(ff)),
        &hex("04 0f 0020 00000021 | 0002 03 00 fffffffc | 0010 0000 00000004 ffffffff 00000000"),
    );
    // Bucket length shorter than its fixed part.
    assert!(decode_message(&hex("04 0f 0018 00000021 | 0000 00 00 00000001 | 0008 0000 00000000")).is_err());
    // Unknown group type.
    assert!(decode_message(&hex("04 0f 0010 00000021 | 0000 04 00 00000001")).is_err());
}

#[test]
fn group_description_request_and_reply() {
    both_ways(
        &Message::new(
            0x40,
            Body::MultipartRequest(MultipartRequest { flags: 0, body: MultipartRequestBody::GroupDesc }),
        ),
        &hex("04 12 0010 00000040 | 0007 0000 00000000"),
    );
    let g =
        GroupDesc { group_type: GroupType::All, group_id: 200, buckets: vec![Bucket::new(vec![Action::output(3)])] };
    both_ways(
        &Message::new(
            0x40,
            Body::MultipartReply(MultipartReply { flags: 0, body: MultipartReplyBody::GroupDesc(vec![g]) }),
        ),
        &hex("04 13 0038 00000040 | 0007 0000 00000000 | 0028 00 00 000000c8 \
              | 0020 0000 ffffffff ffffffff 00000000 | 0000 0010 00000003 0000 000000000000"),
    );
    // A group description shorter than its fixed part.
    assert!(decode_message(&hex("04 13 0018 00000040 | 0007 0000 00000000 | 0004 00 00 00000001")).is_err());
}

#[test]
fn packet_in_from_a_tunnel() {
    let frame = hex("ffffffffffff 02005e00010a 0806");
    let pin = PacketIn {
        buffer_id: OFP_NO_BUFFER,
        total_len: 14,
        reason: OFPR_ACTION,
        table_id: 2,
        cookie: 0xabcd,
        match_: Match::new()
            .with(OxmField::InPort(7))
            .with(OxmField::TunnelId { value: 100, mask: None })
            .with(OxmField::TunIpv4Src { value: Ipv4Addr::new(192, 0, 2, 9), mask: None }),
        data: frame.clone(),
    };
    let mut bytes = hex("04 0a 0048 00000000 | ffffffff 000e 01 02 | 000000000000abcd \
         | 0001 0020 80000004 00000007 80004c08 0000000000000064 00013e04 c0000209 \
         | 0000");
    bytes.extend_from_slice(&frame);
    both_ways(&Message::new(0, Body::PacketIn(pin.clone())), &bytes);
    assert_eq!(pin.in_port(), Some(7));
}

#[test]
fn packet_out() {
    let frame = hex("02005e00010a 02005e00010b 0800");
    let pout = PacketOut {
        buffer_id: OFP_NO_BUFFER,
        in_port: OFPP_CONTROLLER,
        actions: vec![Action::output(OFPP_TABLE)],
        data: frame.clone(),
    };
    let mut bytes =
        hex("04 0d 0036 00000009 | ffffffff fffffffd 0010 000000000000 | 0000 0010 fffffff9 0000 000000000000");
    bytes.extend_from_slice(&frame);
    both_ways(&Message::new(9, Body::PacketOut(pout)), &bytes);
    // actions_len past the end of the message.
    assert!(decode_message(&hex("04 0d 0018 00000009 | ffffffff fffffffd 0010 000000000000")).is_err());
}

#[test]
fn error_message_names() {
    let bytes = hex("04 01 0014 00000005 | 0002 0004 | 04 0e 0058 00000010");
    let (msg, _) = decode_message(&bytes).unwrap().unwrap();
    let Body::Error(err) = &msg.body else { panic!("not an error: {msg:?}") };
    assert_eq!(err.err_type, OFPET_BAD_ACTION);
    assert_eq!(err.request_xid(), Some(0x10));
    assert_eq!(err.to_string(), "OFPET_BAD_ACTION/OFPBAC_BAD_OUT_PORT (type 2, code 4, 8 bytes of data)");
    let e = ErrorMsg { err_type: OFPET_FLOW_MOD_FAILED, code: 6, data: vec![] };
    assert_eq!(e.to_string(), "OFPET_FLOW_MOD_FAILED/OFPFMFC_BAD_COMMAND (type 5, code 6, 0 bytes of data)");
    let e = ErrorMsg { err_type: OFPET_EXPERIMENTER, code: 3, data: hex("00002320") };
    assert_eq!(
        e.to_string(),
        "OFPET_EXPERIMENTER experimenter 0x00002320 exp_code 3 (type 65535, code 3, 4 bytes of data)"
    );
    assert_eq!(
        ErrorMsg { err_type: 77, code: 1, data: vec![] }.to_string(),
        "error type 77 (type 77, code 1, 0 bytes of data)"
    );
    both_ways(&msg, &bytes);
}

#[test]
fn flow_stats_request_and_reply() {
    both_ways(
        &Message::new(
            0x30,
            Body::MultipartRequest(MultipartRequest {
                flags: 0,
                body: MultipartRequestBody::Flow(FlowStatsRequest::all()),
            }),
        ),
        &hex("04 12 0038 00000030 | 0001 0000 00000000 \
             | ff 000000 ffffffff ffffffff 00000000 0000000000000000 0000000000000000 | 0001 0004 00000000"),
    );
    assert_eq!(FlowStatsRequest::all().table_id, OFPTT_ALL);
    let stats = FlowStats {
        table_id: 1,
        duration_sec: 2,
        duration_nsec: 3,
        priority: 4,
        idle_timeout: 5,
        hard_timeout: 6,
        flags: 0,
        cookie: 7,
        packet_count: 8,
        byte_count: 9,
        match_: Match::new(),
        instructions: vec![Instruction::GotoTable(2)],
    };
    both_ways(
        &Message::new(
            0x30,
            Body::MultipartReply(MultipartReply { flags: 0, body: MultipartReplyBody::Flow(vec![stats]) }),
        ),
        &hex("04 13 0050 00000030 | 0001 0000 00000000 \
             | 0040 01 00 00000002 00000003 0004 0005 0006 0000 00000000 \
               0000000000000007 0000000000000008 0000000000000009 | 0001 0004 00000000 | 0001 0008 02 000000"),
    );
    // A multipart type not parsed here is carried as bytes.
    both_ways(
        &Message::new(
            0x31,
            Body::MultipartReply(MultipartReply {
                flags: 1,
                body: MultipartReplyBody::Other { mp_type: 0xffff, body: vec![1, 2, 3] },
            }),
        ),
        &hex("04 13 0013 00000031 | ffff 0001 00000000 | 010203"),
    );
}

/// `ofp_port` of `vm1`, port 10, MAC 02:00:5e:00:01:0a, link down, 10 Gbit/s.
const PORT_VM1: &str = "0000000a 00000000 | 02005e00010a 0000 | 766d3100000000000000000000000000 \
    | 00000000 00000001 00000000 00000000 00000000 00000000 00989680 00989680";

fn port_vm1() -> Port {
    Port { state: OFPPS_LINK_DOWN, curr_speed: 10_000_000, max_speed: 10_000_000, ..Port::new(10, MAC, "vm1") }
}

#[test]
fn port_description_request_and_reply() {
    both_ways(
        &Message::new(
            0x32,
            Body::MultipartRequest(MultipartRequest { flags: 0, body: MultipartRequestBody::PortDesc }),
        ),
        &hex("04 12 0010 00000032 | 000d 0000 00000000"),
    );
    let local = Port { config: OFPPC_PORT_DOWN, ..Port::new(OFPP_LOCAL, MacAddr([2, 0, 0, 0, 0, 1]), "br-int") };
    let reply = Message::new(
        0x32,
        Body::MultipartReply(MultipartReply { flags: 0, body: MultipartReplyBody::PortDesc(vec![port_vm1(), local]) }),
    );
    both_ways(
        &reply,
        &hex(&format!(
            "04 13 0090 00000032 | 000d 0000 00000000 | {PORT_VM1} \
             | fffffffe 00000000 | 020000000001 0000 | 62722d696e7400000000000000000000 \
             | 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000"
        )),
    );
    let Body::MultipartReply(MultipartReply { body: MultipartReplyBody::PortDesc(ports), .. }) = reply.body else {
        unreachable!()
    };
    assert_eq!(ports[0].name(), "vm1");
    assert!(ports[0].is_down() && ports[1].is_down());
    // A 15-byte name keeps its terminating NUL; a longer one is cut.
    assert_eq!(Port::new(1, MAC, "abcdefghijklmno").name(), "abcdefghijklmno");
    assert_eq!(Port::new(1, MAC, "abcdefghijklmnopq").name(), "abcdefghijklmno");
    // A reply whose body is not a whole number of ports is refused.
    assert!(decode_message(&hex("04 13 0014 00000032 | 000d 0000 00000000 | 00000001")).is_err());
}

#[test]
fn port_status() {
    both_ways(
        &Message::new(0, Body::PortStatus(PortStatus { reason: OFPPR_MODIFY, port: port_vm1() })),
        &hex(&format!("04 0c 0050 00000000 | 02 00000000000000 | {PORT_VM1}")),
    );
    // A truncated port is an error.
    assert!(decode_message(&hex("04 0c 000c 00000001 01000000")).is_err());
}

#[test]
fn other_message_types_are_carried() {
    // FLOW_REMOVED is not parsed here.
    both_ways(
        &Message::new(1, Body::Other { msg_type: 11, body: vec![1, 0, 0, 0] }),
        &hex("04 0b 000c 00000001 01000000"),
    );
}

#[test]
fn header_errors() {
    assert_eq!(decode_message(&hex("04 00 0007 00000001")), Err(Error::BadLength { what: "header", length: 7 }));
    assert_eq!(decode_message(&hex("04 00 0000 00000001")), Err(Error::BadLength { what: "header", length: 0 }));
    assert_eq!(decode_message(&hex("01 05 0008 00000001")), Err(Error::BadVersion(1)));
    // Fixed-size bodies with trailing bytes.
    assert!(decode_message(&hex("04 05 000c 00000001 00000000")).is_err());
    assert!(decode_message(&hex("04 14 0009 00000001 00")).is_err());
    assert!(decode_message(&hex("04 09 000d 00000005 0000 ffff 00")).is_err());
    // ... or missing bytes.
    assert!(decode_message(&hex("04 06 001c 00000003 | 00000242ac110002 | 00000000 | fe 00 0000 | 0000004f")).is_err());
    assert!(decode_message(&hex("04 01 000a 00000005 0002")).is_err());
    // A whole message that claims more than it holds is incomplete, not an error.
    assert_eq!(decode_message(&hex("04 02 0010 00000002 70696e67")), Ok(None));
    assert!(Message::decode(&hex("04 02 0010 00000002 70696e67")).is_err());
}

#[test]
fn framer_on_a_stream() {
    let mut stream = Vec::new();
    let msgs = [
        Message::new(1, Body::Hello(Hello::default())),
        Message::new(2, Body::FeaturesRequest),
        Message::new(3, Body::EchoRequest(vec![9; 100])),
        Message::new(
            4,
            Body::FlowMod(FlowMod::add(
                1,
                10,
                arp_request_match(Ipv4Addr::new(10, 0, 0, 1)),
                vec![Instruction::ApplyActions(arp_responder(MAC, Ipv4Addr::new(10, 0, 0, 1)))],
            )),
        ),
    ];
    for m in &msgs {
        m.encode(&mut stream).unwrap();
    }
    // One byte at a time.
    let mut framer = Framer::new();
    let mut got = Vec::new();
    for b in &stream {
        framer.push(std::slice::from_ref(b));
        while let Some(m) = framer.next_message().unwrap() {
            got.push(m);
        }
    }
    assert_eq!(got, msgs);
    assert_eq!(framer.buffered(), 0);
    // All at once.
    let mut framer = Framer::new();
    framer.push(&stream);
    let mut got = Vec::new();
    while let Some(m) = framer.next_message().unwrap() {
        got.push(m);
    }
    assert_eq!(got, msgs);
    // Through decode_message on a growing buffer.
    let mut at = 0;
    let mut got = Vec::new();
    for end in 0..=stream.len() {
        if let Some((m, used)) = decode_message(&stream[at..end]).unwrap() {
            at += used;
            got.push(m);
        }
    }
    assert_eq!(got, msgs);
}

#[test]
fn framer_skips_a_bad_body_and_drops_a_bad_header() {
    let mut framer = Framer::new();
    // A flow-mod with an unknown command (9), then a barrier reply.
    let mut bad = Message::new(1, Body::FlowMod(FlowMod::delete(0, Match::new()))).to_bytes().unwrap();
    bad[8 + 17] = 9;
    framer.push(&bad);
    framer.push(&hex("04 15 0008 00000002"));
    assert_eq!(framer.next_message(), Err(Error::Invalid { what: "flow_mod", field: "command", value: 9 }));
    assert_eq!(framer.next_message(), Ok(Some(Message::new(2, Body::BarrierReply))));
    assert_eq!(framer.next_message(), Ok(None));
    // A header with length 4: the stream cannot be framed any more.
    framer.push(&hex("04 15 0004 00000003 04 15 0008 00000004"));
    assert!(framer.next_message().is_err());
    assert_eq!(framer.buffered(), 0);
}
