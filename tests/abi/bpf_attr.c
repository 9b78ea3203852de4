/*
 * rawload's bpf(2) argument blocks (loader/src/sys/attr.rs) against the
 * kernel's UAPI header, linux/bpf.h from Debian's linux-libc-dev.
 *
 * This file holds no number. tests/abi.rs writes one line per field of
 * every block, with the offset and size rustc gives that field, and passes
 * the file to this one as RAWLOAD_LAYOUT:
 *
 *   RAWLOAD_MEMBER("MapCreate.map_flags", union bpf_attr, map_flags, 16, 4)
 *
 * Each line below becomes _Static_asserts on where the C compiler puts the
 * member the field mirrors, so clang fails, naming the field, when the two
 * disagree. tests/abi.rs runs, in `make test`:
 *
 *   clang-14 -fsyntax-only -Werror -I/usr/include/x86_64-linux-gnu \
 *            -DRAWLOAD_LAYOUT='"generated.h"' tests/abi/bpf_attr.c
 */
#include <stddef.h>
#include <linux/bpf.h>

#ifndef RAWLOAD_LAYOUT
#error "RAWLOAD_LAYOUT names the layout tests/abi.rs generates from attr.rs"
#endif

#define RAWLOAD_SIZEOF_MEMBER(type, member) sizeof(((type *)0)->member)

/* A field and the C member it mirrors: same offset, same size. */
#define RAWLOAD_MEMBER(rust, type, member, offset, size)                      \
	_Static_assert(offsetof(type, member) == (offset),                     \
		       rust ": offset differs from " #type "." #member);       \
	_Static_assert(RAWLOAD_SIZEOF_MEMBER(type, member) == (size),          \
		       rust ": size differs from " #type "." #member);

/* A field that stands for the members from `first` up to `next`. */
#define RAWLOAD_SPAN(rust, type, first, next, offset, size)                   \
	_Static_assert(offsetof(type, first) == (offset),                      \
		       rust ": does not start at " #type "." #first);          \
	_Static_assert(offsetof(type, next) == (offset) + (size),              \
		       rust ": does not end where " #type "." #next " starts");

/* A whole block: rawload passes its size as the size of the C type, so it
 * must not be larger (the kernel would read past the end of its copy). */
#define RAWLOAD_BLOCK(rust, type, size)                                       \
	_Static_assert((size) <= sizeof(type),                                 \
		       rust ": larger than " #type);

/* A number: a bpf(2) command. */
#define RAWLOAD_VALUE(rust, name, value)                                      \
	_Static_assert(name == (value), rust ": differs from " #name);

#include RAWLOAD_LAYOUT
