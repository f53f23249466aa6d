//! Instructions (spec §7.2.4): what a matching flow entry does.

use crate::action::{Action, encode_actions, read_actions};
use crate::wire::{Reader, patch_len, put_u16, put_u64, reserve_u16};
use crate::{Error, Result};

/// Instruction type: go to a later table.
pub const OFPIT_GOTO_TABLE: u16 = 1;
/// Instruction type: write masked metadata.
pub const OFPIT_WRITE_METADATA: u16 = 2;
/// Instruction type: merge actions into the action set.
pub const OFPIT_WRITE_ACTIONS: u16 = 3;
/// Instruction type: apply actions now.
pub const OFPIT_APPLY_ACTIONS: u16 = 4;
/// Instruction type: empty the action set.
pub const OFPIT_CLEAR_ACTIONS: u16 = 5;

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Instruction {
    /// Continue in table `table_id` (which must be greater than the current one).
    GotoTable(u8),
    /// `metadata = (metadata & !mask) | (value & mask)`.
    WriteMetadata { metadata: u64, mask: u64 },
    /// Merge these actions into the action set.
    WriteActions(Vec<Action>),
    /// Apply these actions immediately, in order.
    ApplyActions(Vec<Action>),
    /// Empty the action set.
    ClearActions,
    /// Any other instruction (meter, experimenter): `body` is everything after
    /// the type and length; `4 + body.len()` must be a multiple of 8.
    Unknown { instruction_type: u16, body: Vec<u8> },
}

impl Instruction {
    /// Appends the instruction to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        let (instruction_type, pad) = match self {
            Instruction::GotoTable(_) => (OFPIT_GOTO_TABLE, 0),
            Instruction::WriteMetadata { .. } => (OFPIT_WRITE_METADATA, 4),
            Instruction::WriteActions(_) => (OFPIT_WRITE_ACTIONS, 4),
            Instruction::ApplyActions(_) => (OFPIT_APPLY_ACTIONS, 4),
            Instruction::ClearActions => (OFPIT_CLEAR_ACTIONS, 4),
            Instruction::Unknown { instruction_type, .. } => (*instruction_type, 0),
        };
        put_u16(out, instruction_type);
        let len_at = reserve_u16(out);
        out.resize(out.len() + pad, 0);
        match self {
            Instruction::GotoTable(table) => out.extend_from_slice(&[*table, 0, 0, 0]),
            Instruction::WriteMetadata { metadata, mask } => {
                put_u64(out, *metadata);
                put_u64(out, *mask);
            }
            Instruction::WriteActions(actions) | Instruction::ApplyActions(actions) => encode_actions(actions, out)?,
            Instruction::ClearActions => {}
            Instruction::Unknown { body, .. } => {
                if (4 + body.len()) % 8 != 0 {
                    return Err(Error::BadLength { what: "instruction", length: 4 + body.len() });
                }
                out.extend_from_slice(body);
            }
        }
        patch_len(out, len_at, start, "instruction")
    }

    /// Decodes one instruction from the front of `bytes`; returns it and its length.
    pub fn decode(bytes: &[u8]) -> Result<(Instruction, usize)> {
        let mut r = Reader::new(bytes, "instruction");
        let i = Self::read(&mut r)?;
        Ok((i, bytes.len() - r.remaining()))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Instruction> {
        let mut head = *r;
        let instruction_type = head.u16()?;
        let len = usize::from(head.u16()?);
        if len < 8 || len % 8 != 0 {
            return Err(Error::BadLength { what: "instruction", length: len });
        }
        let mut i = r.sub(len, "instruction")?;
        i.skip(4)?;
        let expect = |want: usize, what: &'static str| {
            if len == want { Ok(()) } else { Err(Error::BadLength { what, length: len }) }
        };
        Ok(match instruction_type {
            OFPIT_GOTO_TABLE => {
                expect(8, "instruction goto_table")?;
                Instruction::GotoTable(i.u8()?)
            }
            OFPIT_WRITE_METADATA => {
                expect(24, "instruction write_metadata")?;
                i.skip(4)?;
                Instruction::WriteMetadata { metadata: i.u64()?, mask: i.u64()? }
            }
            OFPIT_WRITE_ACTIONS => {
                i.skip(4)?;
                Instruction::WriteActions(read_actions(&mut i)?)
            }
            OFPIT_APPLY_ACTIONS => {
                i.skip(4)?;
                Instruction::ApplyActions(read_actions(&mut i)?)
            }
            OFPIT_CLEAR_ACTIONS => {
                expect(8, "instruction clear_actions")?;
                Instruction::ClearActions
            }
            _ => Instruction::Unknown { instruction_type, body: i.rest().to_vec() },
        })
    }
}

/// Appends a list of instructions.
pub fn encode_instructions(instructions: &[Instruction], out: &mut Vec<u8>) -> Result<()> {
    instructions.iter().try_for_each(|i| i.encode(out))
}

/// Decodes a list of instructions filling all of `bytes`.
pub fn decode_instructions(bytes: &[u8]) -> Result<Vec<Instruction>> {
    read_instructions(&mut Reader::new(bytes, "instructions"))
}

pub(crate) fn read_instructions(r: &mut Reader<'_>) -> Result<Vec<Instruction>> {
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(Instruction::read(r)?);
    }
    Ok(out)
}
