#!/usr/bin/env python3
# Copyright 2026 The gpu-sidecar Authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Writes proto/grpc_service.proto and proto/model_config.proto from the descriptors that
Triton's own `tritonclient` wheel (PyPI) compiled from triton-inference-server/common.

The descriptors carry every package, message, field name, number, type and label and every
RPC of the upstream files, so the wire protocol is exactly upstream's; only the comments are
not carried. Run:  pip install 'tritonclient[grpc]==2.73.0' && python3 proto/triton_from_wheel.py
"""

import os
import sys

from google.protobuf import descriptor_pb2
from tritonclient.grpc import model_config_pb2, service_pb2

HERE = os.path.dirname(os.path.abspath(__file__))

HEADER = """\
// Copyright 2020-2025, NVIDIA CORPORATION & AFFILIATES. All rights reserved.
//
// Redistribution and use in source and binary forms, with or without
// modification, are permitted provided that the following conditions
// are met:
//  * Redistributions of source code must retain the above copyright
//    notice, this list of conditions and the following disclaimer.
//  * Redistributions in binary form must reproduce the above copyright
//    notice, this list of conditions and the following disclaimer in the
//    documentation and/or other materials provided with the distribution.
//  * Neither the name of NVIDIA CORPORATION nor the names of its
//    contributors may be used to endorse or promote products derived
//    from this software without specific prior written permission.
//
// THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS ``AS IS'' AND ANY
// EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
// IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR
// PURPOSE ARE DISCLAIMED.  IN NO EVENT SHALL THE COPYRIGHT OWNER OR
// CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL,
// EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO,
// PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR
// PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY
// OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT
// (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
// OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.

// Triton's {name} (triton-inference-server/common, BSD-3-Clause), rebuilt field for field
// from the descriptor compiled into the tritonclient {version} wheel by
// proto/triton_from_wheel.py; the upstream comments are not carried. Do not edit.
"""

FD = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    FD.TYPE_DOUBLE: "double", FD.TYPE_FLOAT: "float", FD.TYPE_INT64: "int64",
    FD.TYPE_UINT64: "uint64", FD.TYPE_INT32: "int32", FD.TYPE_FIXED64: "fixed64",
    FD.TYPE_FIXED32: "fixed32", FD.TYPE_BOOL: "bool", FD.TYPE_STRING: "string",
    FD.TYPE_BYTES: "bytes", FD.TYPE_UINT32: "uint32", FD.TYPE_SFIXED32: "sfixed32",
    FD.TYPE_SFIXED64: "sfixed64", FD.TYPE_SINT32: "sint32", FD.TYPE_SINT64: "sint64",
}


def type_name(field, package):
    if field.type in SCALARS:
        return SCALARS[field.type]
    name = field.type_name
    prefix = "." + package + "."
    return name[len(prefix):] if name.startswith(prefix) else name


def render_enum(enum, indent, out):
    out.append(f"{indent}enum {enum.name} {{")
    if enum.options.allow_alias:
        out.append(f"{indent}  option allow_alias = true;")
    for value in enum.value:
        out.append(f"{indent}  {value.name} = {value.number};")
    out.append(f"{indent}}}")


def render_message(message, indent, package, out):
    out.append(f"{indent}message {message.name} {{")
    inner = indent + "  "
    maps = {n.name: n for n in message.nested_type if n.options.map_entry}
    for nested in message.nested_type:
        if not nested.options.map_entry:
            render_message(nested, inner, package, out)
    for enum in message.enum_type:
        render_enum(enum, inner, out)

    def field_line(field, pad):
        entry = maps.get(field.type_name.rsplit(".", 1)[-1])
        if field.label == FD.LABEL_REPEATED and entry is not None:
            key, value = entry.field
            kind = f"map<{type_name(key, package)}, {type_name(value, package)}>"
        else:
            label = "repeated " if field.label == FD.LABEL_REPEATED else ""
            label += "optional " if field.proto3_optional else ""
            kind = label + type_name(field, package)
        return f"{pad}{kind} {field.name} = {field.number};"

    real_oneofs = {}
    for field in message.field:
        if field.HasField("oneof_index") and not field.proto3_optional:
            real_oneofs.setdefault(field.oneof_index, []).append(field)
    done = set()
    for field in message.field:
        if field.HasField("oneof_index") and not field.proto3_optional:
            index = field.oneof_index
            if index in done:
                continue
            done.add(index)
            out.append(f"{inner}oneof {message.oneof_decl[index].name} {{")
            for member in real_oneofs[index]:
                out.append(field_line(member, inner + "  "))
            out.append(f"{inner}}}")
        else:
            out.append(field_line(field, inner))
    for reserved in message.reserved_range:
        out.append(f"{inner}reserved {reserved.start} to {reserved.end - 1};")
    for name in message.reserved_name:
        out.append(f'{inner}reserved "{name}";')
    out.append(f"{indent}}}")


def render(module, version):
    fd = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fd)
    out = [HEADER.format(name=fd.name, version=version).rstrip("\n"), ""]
    out.append(f'syntax = "{fd.syntax}";')
    out.append("")
    out.append(f"package {fd.package};")
    for dependency in fd.dependency:
        out.append(f'import "{dependency}";')
    for message in fd.message_type:
        out.append("")
        render_message(message, "", fd.package, out)
    for enum in fd.enum_type:
        out.append("")
        render_enum(enum, "", out)
    for service in fd.service:
        out.append("")
        out.append(f"service {service.name} {{")
        for method in service.method:
            request = ("stream " if method.client_streaming else "") + type_name(
                FD(type=FD.TYPE_MESSAGE, type_name=method.input_type), fd.package)
            response = ("stream " if method.server_streaming else "") + type_name(
                FD(type=FD.TYPE_MESSAGE, type_name=method.output_type), fd.package)
            out.append(f"  rpc {method.name}({request}) returns ({response}) {{}}")
        out.append("}")
    return fd.name, "\n".join(out) + "\n"


def main():
    from importlib.metadata import version

    tritonclient_version = version("tritonclient")
    for module in (model_config_pb2, service_pb2):
        name, text = render(module, tritonclient_version)
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote proto/{name}", file=sys.stderr)


if __name__ == "__main__":
    main()
