//! The iproute2 grammar of `ipvlan link ...` (a public contract: tools call it like `ip`).
//!
//! ```text
//! link add [link MASTER] [name] NAME [mtu N] type ipvlan [mode l2|l3|l3s] [bridge|private|vepa] [source_guard on|off] [host_access on|off]
//! link set [dev] NAME type ipvlan [mode MODE] [FLAG] [source_guard on|off] [host_access on|off]
//! link del|delete [dev] NAME
//! link show|list|lst|ls [[dev] NAME]
//! ```
//! Keywords match by prefix as in iproute2 (`mo` = `mode`, `p` = `private`); values of
//! `mode` must be exact. As in iproute2, a mode or flag after `type ipvlan` also
//! sends the flags (bridge unless a flag was given): see spec §8.2.
//!
//! `source_guard on|off` is an ipvlan-rs extension (the kernel driver has no such
//! option): with it on, the port's slaves may send only ARP, IPv4 and IPv6 from their
//! own addresses. `host_access on|off` is another: with it on, the master's namespace
//! and the port's slaves reach each other (the kernel driver keeps them apart). Both
//! are port-wide like the mode, left alone unless given, and sending them alone does
//! not send the flags.

use ipvlan_core::Flags;

pub const USAGE: &str = "\
Usage: ipvlan [-d] [-j] [-s] link show [ [dev] NAME ]
       ipvlan link add link MASTER [name] NAME [mtu MTU] type ipvlan [ mode MODE ] [ FLAGS ] [ GUARD ] [ HOST ]
       ipvlan link set [dev] NAME type ipvlan [ mode MODE ] [ FLAGS ] [ GUARD ] [ HOST ]
       ipvlan link delete [dev] NAME
       ipvlan daemon [--socket PATH] [--backend user]
       ipvlan demo

MODE: l3 | l3s | l2
FLAGS: bridge | private | vepa
GUARD: source_guard off | source_guard on   (ipvlan-rs extension: slaves may send
       only ARP, IPv4 and IPv6 from their own addresses)
HOST: host_access off | host_access on   (ipvlan-rs extension: the master's namespace
       and the slaves reach each other)
(first values are the defaults if nothing is specified).";

pub const EXAMPLES: &str = "\
Examples (the kernel's ipvlan HOWTO, Documentation/networking/ipvlan.rst):
  ip netns add ns0
  ipvlan link add link eth0 ipvl0 type ipvlan mode l2
  ip link set dev ipvl0 netns ns0
  ip netns exec ns0 ip link set dev ipvl0 up
  ip netns exec ns0 ip -4 addr add 10.0.0.2/24 dev ipvl0
  ip netns exec ns0 ip -4 route add default via 10.0.0.1 dev ipvl0
  ipvlan -d link show
  ipvlan link set dev ipvl0 type ipvlan mode l2 private
  ip netns exec ns0 ipvlan link del dev ipvl0";

pub const IPVLAN_USAGE: &str = "\
Usage: ... ipvlan [ mode MODE ] [ FLAGS ] [ source_guard on|off ] [ host_access on|off ]

MODE: l3 | l3s | l2
FLAGS: bridge | private | vepa
source_guard, host_access: ipvlan-rs extensions, off by default
(first values are the defaults if nothing is specified).";

/// The ipvlan-specific options: `None` = attribute not sent (spec §1.4).
pub type IpvlanArgs = ipvlan_proto::PortArgs;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkCmd {
    Add {
        master: String,
        name: String,
        mtu: Option<u32>,
        args: IpvlanArgs,
    },
    Set {
        dev: String,
        args: IpvlanArgs,
    },
    Del {
        dev: String,
    },
    Show {
        dev: Option<String>,
    },
}

/// A usage error: the message to print (exit status 1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// iproute2's `matches()`: `word` is a non-empty prefix of `keyword`.
fn matches(word: &str, keyword: &str) -> bool {
    !word.is_empty() && keyword.starts_with(word)
}

/// iproute2's interface-name check: 1..=15 bytes, no '/', ':' or whitespace, not "." or "..".
pub fn check_ifname(name: &str) -> Result<(), UsageError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "Error: argument \"{name}\" is wrong: \"name\" not a valid ifname (1 to 15 bytes, no '/', ':' or spaces)"
        )))
    }
}

fn parse_ipvlan_args(words: &[String]) -> Result<IpvlanArgs, UsageError> {
    let mut out = IpvlanArgs::default();
    let mut flag_seen = false;
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if matches(w, "mode") {
            let v = it
                .next()
                .ok_or_else(|| usage("Command line is not complete. Try option \"help\""))?;
            out.mode = Some(v.parse().map_err(|_| {
                usage(format!(
                    "Error: argument of \"mode\" must be either \"l2\", \"l3\" or \"l3s\", not \"{v}\""
                ))
            })?);
        } else if !flag_seen && matches(w, "private") {
            out.flags = Some(Flags::Private);
            flag_seen = true;
        } else if !flag_seen && matches(w, "vepa") {
            out.flags = Some(Flags::Vepa);
            flag_seen = true;
        } else if !flag_seen && matches(w, "bridge") {
            out.flags = Some(Flags::Bridge);
            flag_seen = true;
        } else if matches(w, "source_guard") {
            let v = it
                .next()
                .ok_or_else(|| usage("Command line is not complete. Try option \"help\""))?;
            out.source_guard = Some(match v.as_str() {
                "on" => true,
                "off" => false,
                _ => {
                    return Err(usage(format!(
                        "Error: argument of \"source_guard\" must be \"on\" or \"off\", not \"{v}\""
                    )));
                }
            });
        } else if matches(w, "help") {
            return Err(usage(IPVLAN_USAGE));
        } else if matches(w, "host_access") {
            let v = it
                .next()
                .ok_or_else(|| usage("Command line is not complete. Try option \"help\""))?;
            out.host_access = Some(match v.as_str() {
                "on" => true,
                "off" => false,
                _ => {
                    return Err(usage(format!(
                        "Error: argument of \"host_access\" must be \"on\" or \"off\", not \"{v}\""
                    )));
                }
            });
        } else {
            return Err(usage(format!(
                "ipvlan: unknown option \"{w}\"?\n{IPVLAN_USAGE}"
            )));
        }
    }
    if out.mode.is_some() && out.flags.is_none() {
        // iproute2 always sends the flags attribute once any ipvlan argument is given
        // (of its own: `source_guard` and `host_access` are ours).
        out.flags = Some(Flags::Bridge);
    }
    Ok(out)
}

/// Splits `... type ipvlan ARGS` off the generic part; requires the kind to be ipvlan.
fn split_type(words: &[String]) -> Result<(&[String], Option<&[String]>), UsageError> {
    match words.iter().position(|w| w == "type") {
        None => Ok((words, None)),
        Some(i) => {
            let kind = words
                .get(i + 1)
                .ok_or_else(|| usage("Command line is not complete. Try option \"help\""))?;
            if kind != "ipvlan" {
                return Err(usage(format!(
                    "Error: ipvlan-rs only makes links of type \"ipvlan\", not \"{kind}\" (use ip for other kinds)."
                )));
            }
            Ok((&words[..i], Some(&words[i + 2..])))
        }
    }
}

fn parse_mtu(v: Option<&String>) -> Result<u32, UsageError> {
    let v = v.ok_or_else(|| usage("Command line is not complete. Try option \"help\""))?;
    v.parse::<u32>()
        .ok()
        .filter(|m| (68..=65535).contains(m))
        .ok_or_else(|| {
            usage(format!(
                "Error: argument \"{v}\" is wrong: Invalid \"mtu\" value (68 to 65535)"
            ))
        })
}

/// Parses the words after `link`.
pub fn parse_link(words: &[String]) -> Result<LinkCmd, UsageError> {
    let Some((verb, rest)) = words.split_first() else {
        return Ok(LinkCmd::Show { dev: None });
    };
    let verb = verb.as_str();
    if matches(verb, "add") {
        let (generic, ipvlan) = split_type(rest)?;
        let ipvlan = ipvlan.ok_or_else(|| {
            usage("Not enough information: \"type\" argument is required (type ipvlan)")
        })?;
        let (mut master, mut name, mut mtu) = (None, None, None);
        let mut it = generic.iter();
        while let Some(w) = it.next() {
            match w.as_str() {
                "link" => {
                    master = Some(
                        it.next()
                            .ok_or_else(|| {
                                usage("Command line is not complete. Try option \"help\"")
                            })?
                            .clone(),
                    )
                }
                "name" | "dev" => {
                    name = Some(
                        it.next()
                            .ok_or_else(|| {
                                usage("Command line is not complete. Try option \"help\"")
                            })?
                            .clone(),
                    )
                }
                "mtu" => mtu = Some(parse_mtu(it.next())?),
                other if name.is_none() && !other.starts_with('-') => {
                    name = Some(other.to_string())
                }
                other => {
                    return Err(usage(format!(
                        "Error: either \"dev\" is duplicate, or \"{other}\" is a garbage."
                    )));
                }
            }
        }
        let name =
            name.ok_or_else(|| usage("Not enough information: \"name\" argument is required"))?;
        check_ifname(&name)?;
        let master = master.ok_or_else(|| {
            usage("Not enough information: \"link\" argument is required: the master (e.g. link eth0)")
        })?;
        Ok(LinkCmd::Add {
            master,
            name,
            mtu,
            args: parse_ipvlan_args(ipvlan)?,
        })
    } else if matches(verb, "set") || matches(verb, "change") {
        let (generic, ipvlan) = split_type(rest)?;
        let dev = single_dev(generic)?
            .ok_or_else(|| usage("Not enough information: \"dev\" argument is required."))?;
        let args = match ipvlan {
            Some(a) => parse_ipvlan_args(a)?,
            None => {
                return Err(usage(
                    "ipvlan link set only changes ipvlan options: ... type ipvlan [ mode MODE ] [ FLAGS ] [ source_guard on|off ] [ host_access on|off ]",
                ));
            }
        };
        Ok(LinkCmd::Set { dev, args })
    } else if matches(verb, "delete") || verb == "del" {
        let (generic, _) = split_type(rest)?;
        let dev = single_dev(generic)?
            .ok_or_else(|| usage("Not enough information: \"dev\" argument is required."))?;
        Ok(LinkCmd::Del { dev })
    } else if matches(verb, "show") || matches(verb, "list") || verb == "lst" || verb == "ls" {
        Ok(LinkCmd::Show {
            dev: single_dev(rest)?,
        })
    } else if matches(verb, "help") {
        Err(usage(USAGE))
    } else {
        Err(usage(format!(
            "Command \"{verb}\" is unknown, try \"ipvlan link help\"."
        )))
    }
}

/// `[dev] NAME`, nothing else.
fn single_dev(words: &[String]) -> Result<Option<String>, UsageError> {
    let name = match words {
        [] => return Ok(None),
        [d, n] if d == "dev" => n,
        [n] if n != "dev" => n,
        _ => {
            return Err(usage(format!(
                "Error: either \"dev\" is duplicate, or \"{}\" is a garbage.",
                words.last().map(String::as_str).unwrap_or("")
            )));
        }
    };
    check_ifname(name)?;
    Ok(Some(name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvlan_core::Mode;

    fn p(s: &str) -> Result<LinkCmd, UsageError> {
        let words: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse_link(&words)
    }

    fn add(master: &str, name: &str, mode: Option<Mode>, flags: Option<Flags>) -> LinkCmd {
        LinkCmd::Add {
            master: master.into(),
            name: name.into(),
            mtu: None,
            args: IpvlanArgs {
                mode,
                flags,
                ..Default::default()
            },
        }
    }

    #[test]
    fn howto_forms() {
        assert_eq!(
            p("add link eth0 ipvl0 type ipvlan mode l2").unwrap(),
            add("eth0", "ipvl0", Some(Mode::L2), Some(Flags::Bridge))
        );
        assert_eq!(
            p("add link eth0 name ipvl0 type ipvlan mode l2 bridge").unwrap(),
            add("eth0", "ipvl0", Some(Mode::L2), Some(Flags::Bridge))
        );
        assert_eq!(
            p("add link eth0 name x type ipvlan").unwrap(),
            add("eth0", "x", None, None)
        );
        assert_eq!(
            p("add link eth0 x type ipvlan p").unwrap(),
            add("eth0", "x", None, Some(Flags::Private))
        );
        assert_eq!(
            p("add name x link eth0 mtu 1300 type ipvlan mo l3s vepa").unwrap(),
            LinkCmd::Add {
                master: "eth0".into(),
                name: "x".into(),
                mtu: Some(1300),
                args: IpvlanArgs {
                    mode: Some(Mode::L3s),
                    flags: Some(Flags::Vepa),
                    ..Default::default()
                }
            }
        );
    }

    #[test]
    fn errors() {
        assert!(
            p("add link eth0 x type ipvlan private vepa")
                .unwrap_err()
                .0
                .contains("unknown option \"vepa\"")
        );
        assert!(
            p("add link eth0 x type ipvlan mode l4")
                .unwrap_err()
                .0
                .contains("\"l4\"")
        );
        assert!(
            p("add link eth0 x type ipvlan foo")
                .unwrap_err()
                .0
                .contains("\"foo\"")
        );
        assert!(
            p("add link eth0 abcdefghijklmnop type ipvlan")
                .unwrap_err()
                .0
                .contains("abcdefghijklmnop")
        );
        assert!(
            p("add link eth0 x type macvlan")
                .unwrap_err()
                .0
                .contains("macvlan")
        );
        assert!(p("add x type ipvlan").unwrap_err().0.contains("link"));
        assert!(p("add link eth0 x").unwrap_err().0.contains("type"));
        assert!(p("add link eth0 x type ipvlan mode").is_err());
        assert!(p("frob").is_err());
    }

    #[test]
    fn set_del_show() {
        assert_eq!(
            p("set dev x type ipvlan mode l3").unwrap(),
            LinkCmd::Set {
                dev: "x".into(),
                args: IpvlanArgs {
                    mode: Some(Mode::L3),
                    flags: Some(Flags::Bridge),
                    ..Default::default()
                }
            }
        );
        assert_eq!(
            p("set x type ipvlan private").unwrap(),
            LinkCmd::Set {
                dev: "x".into(),
                args: IpvlanArgs {
                    mode: None,
                    flags: Some(Flags::Private),
                    ..Default::default()
                }
            }
        );
        assert_eq!(p("del dev x").unwrap(), LinkCmd::Del { dev: "x".into() });
        assert_eq!(p("delete x").unwrap(), LinkCmd::Del { dev: "x".into() });
        assert_eq!(p("show").unwrap(), LinkCmd::Show { dev: None });
        assert_eq!(p("").unwrap(), LinkCmd::Show { dev: None });
        assert_eq!(
            p("sh dev x").unwrap(),
            LinkCmd::Show {
                dev: Some("x".into())
            }
        );
        assert!(p("show a b").is_err());
    }

    #[test]
    fn host_access_is_ours_and_sends_no_flags() {
        let args = |s: &str| match p(s).unwrap() {
            LinkCmd::Set { args, .. } | LinkCmd::Add { args, .. } => args,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            args("set x type ipvlan host_access on"),
            IpvlanArgs {
                host_access: Some(true),
                ..Default::default()
            }
        );
        let a = args("add link eth0 x type ipvlan mode l3 source_guard on ho off");
        assert_eq!((a.source_guard, a.host_access), (Some(true), Some(false)));
        assert!(p("set x type ipvlan host_access yes").is_err());
        assert!(p("set x type ipvlan host_access").is_err());
        // `h` is still `help`.
        assert!(p("set x type ipvlan h").is_err());
    }

    #[test]
    fn source_guard_is_ours_and_sends_no_flags() {
        let args = |s: &str| match p(s).unwrap() {
            LinkCmd::Set { args, .. } | LinkCmd::Add { args, .. } => args,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            args("set x type ipvlan source_guard on"),
            IpvlanArgs {
                source_guard: Some(true),
                ..Default::default()
            }
        );
        assert_eq!(
            args("add link eth0 x type ipvlan mode l2 private source_guard off"),
            IpvlanArgs {
                mode: Some(Mode::L2),
                flags: Some(Flags::Private),
                source_guard: Some(false),
                host_access: None,
            }
        );
        assert_eq!(
            args("set x type ipvlan source_guard on mode l3").flags,
            Some(Flags::Bridge)
        );
        let e = p("set x type ipvlan source_guard yes").unwrap_err().0;
        assert!(e.contains("\"on\" or \"off\"") && e.contains("yes"), "{e}");
        assert!(p("set x type ipvlan source_guard").is_err());
    }
}
