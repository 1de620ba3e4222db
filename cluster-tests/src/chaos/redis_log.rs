//! Redis evidence for I6: the command stream `redis-cli MONITOR` printed during a run, replayed.
//!
//! Redis runs one command at a time, and MONITOR prints each client command followed by the commands its Lua
//! script ran (`[0 lua] "SET" ...`), so the stream is the true order of every effect. The replay follows the
//! epoch of each shard from the lease scripts (`SET idp:lease:shard:<n> "<node> <epoch>"`) and checks every
//! record that a fenced write script set or deleted (`idp:r:<n>:...`): the epoch the write carried
//! (`ARGV[1]` of a script whose `KEYS[1]` is `idp:epoch:shard:<n>`) must be the shard's current one. A record
//! written outside such a script, or by a script carrying a stale epoch, is a write committed by a fenced owner.

use std::collections::BTreeMap;

/// One command of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// 1-based line in the MONITOR output.
    pub line: usize,
    /// Run by a Lua script (`[0 lua]`), else sent by a client (`[0 127.0.0.1:port]`).
    pub from_script: bool,
    /// The client's address (empty for script commands).
    pub client: String,
    /// The command and its arguments, unescaped (lossy UTF-8: keys and epochs are text).
    pub args: Vec<String>,
}

/// A record write committed by a fenced (or unfenced) writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleWrite {
    pub line: usize,
    pub shard: u16,
    pub key: String,
    /// The epoch the write carried (`None`: not written by a fenced write script at all).
    pub carried: Option<u64>,
    /// The shard's epoch at that moment.
    pub current: u64,
    /// Who sent the script.
    pub client: String,
}

/// Parses MONITOR output; lines that are not commands (`OK`, blank) are skipped.
pub fn parse(text: &str) -> Vec<Command> {
    text.lines().enumerate().filter_map(|(index, line)| parse_line(index + 1, line)).collect()
}

fn parse_line(line_number: usize, line: &str) -> Option<Command> {
    let open = line.find(" [")?;
    let close = open + line[open..].find("] ")?;
    let source = &line[open + 2..close];
    let (_, client) = source.split_once(' ')?;
    let args = quoted_strings(&line[close + 2..])?;
    if args.is_empty() {
        return None;
    }
    Some(Command { line: line_number, from_script: client == "lua", client: client.to_string(), args })
}

/// `"a" "b\"c" "\x01"` → its strings, with MONITOR's escapes undone.
fn quoted_strings(text: &str) -> Option<Vec<String>> {
    let mut strings = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        match chars.next() {
            None => return Some(strings),
            Some('"') => {}
            Some(_) => return None,
        }
        let mut bytes = Vec::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => bytes.push(b'\n'),
                    'r' => bytes.push(b'\r'),
                    't' => bytes.push(b'\t'),
                    'a' => bytes.push(7),
                    'b' => bytes.push(8),
                    'x' => {
                        let high = chars.next()?.to_digit(16)?;
                        let low = chars.next()?.to_digit(16)?;
                        bytes.push((high * 16 + low) as u8);
                    }
                    other => bytes.extend(other.to_string().as_bytes()),
                },
                other => bytes.extend(other.to_string().as_bytes()),
            }
        }
        strings.push(String::from_utf8_lossy(&bytes).into_owned());
    }
}

/// The shard of `idp:<prefix><shard>` or `idp:<prefix><shard>:...`.
fn shard_after(key: &str, prefix: &str) -> Option<u16> {
    let rest = key.strip_prefix(prefix)?;
    rest.split(':').next()?.parse().ok()
}

/// The write script a client command runs, if it is one: (shard, epoch carried).
fn fenced_script(command: &Command) -> Option<(u16, Option<u64>)> {
    let name = command.args.first()?.to_ascii_lowercase();
    if !matches!(name.as_str(), "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall") {
        return None;
    }
    let key_count: usize = command.args.get(2)?.parse().ok()?;
    let first_key = command.args.get(3).filter(|_| key_count >= 1)?;
    let shard = shard_after(first_key, "idp:epoch:shard:")?;
    let carried = command.args.get(3 + key_count).and_then(|epoch| epoch.parse().ok());
    Some((shard, carried))
}

/// Replays the stream; answers every record write whose shard's epoch was known and not the one the write carried.
/// Shards whose epoch the stream never showed (no lease taken or renewed during it) are not judged.
pub fn stale_writes(commands: &[Command]) -> Vec<StaleWrite> {
    judge(commands, &BTreeMap::new()).stale
}

/// What the replay of one stream found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Judgement {
    /// Record writes committed with a stale epoch (or outside a fenced script): I6 violations.
    pub stale: Vec<StaleWrite>,
    /// Shards with at least one record write judged against a known epoch.
    pub shards_judged: usize,
    /// Record writes judged.
    pub writes_judged: usize,
    /// Fenced write scripts that carried an epoch older than the shard's current one.
    pub stale_attempts: usize,
    /// Of them, those that wrote no record (the fence refused them).
    pub stale_attempts_refused: usize,
}

/// [`stale_writes`], with the shards' epochs at the stream's start (`seed`: read from `idp:epoch:shard:<n>` once
/// MONITOR attached), so that shards whose lease never moved during the run are judged too; and the figures that
/// show the judgement was not vacuous.
pub fn judge(commands: &[Command], seed: &BTreeMap<u16, u64>) -> Judgement {
    let mut epochs = seed.clone();
    let mut script: Option<(String, u16, Option<u64>)> = None;
    // A stale script seen, and whether it wrote a record yet.
    let mut stale_script: Option<bool> = None;
    let mut judgement = Judgement::default();
    let mut judged_shards = std::collections::BTreeSet::new();
    let close = |stale_script: &mut Option<bool>, judgement: &mut Judgement| {
        if let Some(wrote) = stale_script.take() {
            judgement.stale_attempts += 1;
            if !wrote {
                judgement.stale_attempts_refused += 1;
            }
        }
    };
    for command in commands {
        if !command.from_script {
            close(&mut stale_script, &mut judgement);
            script = fenced_script(command).map(|(shard, carried)| (command.client.clone(), shard, carried));
            if let Some((_, shard, Some(carried))) = &script {
                if epochs.get(shard).is_some_and(|current| carried < current) {
                    stale_script = Some(false);
                }
            }
            continue;
        }
        let verb = command.args[0].to_ascii_uppercase();
        let key = command.args.get(1).map(String::as_str).unwrap_or_default();
        if verb == "SET" {
            if let Some(shard) = shard_after(key, "idp:lease:shard:") {
                let epoch = command.args.get(2).and_then(|value| value.rsplit_once(' ')?.1.parse().ok());
                if let Some(epoch) = epoch {
                    epochs.insert(shard, epoch);
                }
                continue;
            }
        }
        let writes_record = matches!(verb.as_str(), "SET" | "DEL" | "UNLINK" | "SETEX" | "PSETEX" | "GETDEL");
        let Some(shard) = shard_after(key, "idp:r:").filter(|_| writes_record) else { continue };
        if let Some(wrote) = stale_script.as_mut() {
            *wrote = true;
        }
        let Some(current) = epochs.get(&shard).copied() else { continue };
        judgement.writes_judged += 1;
        judged_shards.insert(shard);
        let (client, carried) = match &script {
            Some((client, script_shard, carried)) if *script_shard == shard => (client.clone(), *carried),
            Some((client, _, _)) => (client.clone(), None),
            None => (String::new(), None),
        };
        if carried != Some(current) {
            let write = StaleWrite { line: command.line, shard, key: key.to_string(), carried, current, client };
            judgement.stale.push(write);
        }
    }
    close(&mut stale_script, &mut judgement);
    judgement.shards_judged = judged_shards.len();
    judgement
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "1795455251.380964 [0 127.0.0.1:38852]";
    const LUA: &str = "1795455251.381039 [0 lua]";

    fn acquire(shard: u16, node: &str, epoch: u64) -> String {
        format!(
            "{CLIENT} \"evalsha\" \"ab12\" \"2\" \"idp:lease:shard:{shard}\" \"idp:epoch:shard:{shard}\" \"{node}\" \"3000\"\n\
             {LUA} \"GET\" \"idp:lease:shard:{shard}\"\n\
             {LUA} \"INCR\" \"idp:epoch:shard:{shard}\"\n\
             {LUA} \"SET\" \"idp:lease:shard:{shard}\" \"{node} {epoch}\" \"PX\" \"3000\"\n"
        )
    }

    /// A fenced write script carrying `epoch`; `applied` says whether it went on to set the record.
    fn write(shard: u16, epoch: u64, applied: bool) -> String {
        let mut text = format!(
            "{CLIENT} \"evalsha\" \"cd34\" \"2\" \"idp:epoch:shard:{shard}\" \"idp:r:{shard}:cAAA\" \"{epoch}\" \"1795455300000\" \"\\x01\\x02v\\\"al\"\n\
             {LUA} \"GET\" \"idp:epoch:shard:{shard}\"\n"
        );
        if applied {
            text.push_str(&format!(
                "{LUA} \"SET\" \"idp:r:{shard}:cAAA\" \"\\x01\\x02v\\\"al\" \"PXAT\" \"1795455300000\"\n"
            ));
        }
        text
    }

    #[test]
    fn monitor_lines_are_parsed_with_their_escapes() {
        let commands = parse(&format!("OK\n{}", write(5, 3, true)));
        assert_eq!(commands.len(), 3);
        assert_eq!(commands[0].line, 2);
        assert!(!commands[0].from_script);
        assert_eq!(commands[0].client, "127.0.0.1:38852");
        assert_eq!(commands[0].args[7], "\u{1}\u{2}v\"al");
        assert!(commands[2].from_script);
        assert_eq!(commands[2].args[..2], ["SET".to_string(), "idp:r:5:cAAA".to_string()]);
        assert_eq!(fenced_script(&commands[0]), Some((5, Some(3))));
        assert_eq!(quoted_strings("\"a\\\\b\" \"\\n\""), Some(vec!["a\\b".to_string(), "\n".to_string()]));
        assert_eq!(quoted_strings("unquoted"), None);
    }

    #[test]
    fn writes_at_the_current_epoch_pass() {
        let text = [acquire(5, "node-1", 3), write(5, 3, true), acquire(5, "node-2", 4), write(5, 4, true)].concat();
        assert_eq!(stale_writes(&parse(&text)), vec![]);
    }

    #[test]
    fn a_stale_owner_refused_by_the_fence_passes() {
        let text = [acquire(5, "node-1", 3), acquire(5, "node-2", 4), write(5, 3, false), write(5, 4, true)].concat();
        assert_eq!(stale_writes(&parse(&text)), vec![]);
    }

    #[test]
    fn a_stale_owner_whose_write_was_applied_is_reported() {
        let text = [acquire(5, "node-1", 3), acquire(5, "node-2", 4), write(5, 3, true)].concat();
        let stale = stale_writes(&parse(&text));
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert_eq!((stale[0].shard, stale[0].carried, stale[0].current), (5, Some(3), 4));
        assert_eq!(stale[0].key, "idp:r:5:cAAA");
        assert_eq!(stale[0].line, 11);
    }

    #[test]
    fn a_record_written_outside_a_fenced_script_is_reported() {
        let text = [acquire(7, "node-1", 1), format!("{LUA} \"DEL\" \"idp:r:7:rBBB\"\n")].concat();
        let stale = stale_writes(&parse(&text));
        assert_eq!(stale.len(), 1);
        assert_eq!((stale[0].carried, stale[0].current), (None, 1));
        // A script of another shard does not vouch for this one.
        let text =
            [acquire(7, "node-1", 1), write(8, 1, false), format!("{LUA} \"SET\" \"idp:r:7:rBBB\" \"v\"\n")].concat();
        assert_eq!(stale_writes(&parse(&text)).len(), 1);
    }

    #[test]
    fn shards_whose_epoch_was_never_seen_are_not_judged() {
        assert_eq!(stale_writes(&parse(&write(9, 1, true))), vec![]);
        // Other shards' leases do not set this one's epoch.
        let text = [acquire(1, "node-1", 6), write(9, 1, true)].concat();
        assert_eq!(stale_writes(&parse(&text)), vec![]);
    }

    #[test]
    fn seeded_epochs_judge_shards_whose_lease_never_moved_and_refusals_are_counted() {
        // No lease command in the stream: without a seed nothing is judged, with one the stale write is found.
        let text = [write(9, 2, true), write(9, 1, true), write(9, 1, false)].concat();
        let commands = parse(&text);
        assert_eq!(judge(&commands, &BTreeMap::new()), Judgement::default());
        let judgement = judge(&commands, &BTreeMap::from([(9, 2)]));
        assert_eq!(judgement.stale.len(), 1, "{judgement:?}");
        assert_eq!((judgement.stale[0].carried, judgement.stale[0].current), (Some(1), 2));
        assert_eq!((judgement.shards_judged, judgement.writes_judged), (1, 2));
        assert_eq!((judgement.stale_attempts, judgement.stale_attempts_refused), (2, 1));
        // A stream where the fence refused the stale owner: no violation, one refused attempt.
        let text = [acquire(5, "node-1", 3), acquire(5, "node-2", 4), write(5, 3, false), write(5, 4, true)].concat();
        let judgement = judge(&parse(&text), &BTreeMap::new());
        assert!(judgement.stale.is_empty());
        assert_eq!((judgement.stale_attempts, judgement.stale_attempts_refused, judgement.shards_judged), (1, 1, 1));
    }
}
