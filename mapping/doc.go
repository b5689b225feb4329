// Package mapping is mgsip's rule book: which gateway endpoint is which SIP
// account or trunk channel, which digit map a line uses, how numbers are
// rewritten and where calls are routed.
//
// Config holds the rules as written in the YAML file (plain structs; the
// YAML decoding itself lives in cmd). New compiles a Config into Rules:
// templates expanded, regular expressions and digit maps compiled,
// references resolved, and every problem reported at once with the key
// path it comes from. Rules are immutable and safe for concurrent use; a
// reload builds new Rules and swaps them in (see Holder).
//
// The package imports the standard library only.
package mapping
