/**
 * The file descriptors server reflection sends, as protoc would write them. proto-loader
 * builds them with protobufjs (7.x), which gets two things wrong that reflection clients
 * check:
 * - a map field's entry message is named after the field (`Properties`) instead of
 *   `PropertiesEntry`: buf curl and grpcurl then refuse the whole file ("incorrect implicit
 *   map entry name", fullstorydev/grpcurl#519), so no method of the service can be called;
 * - a proto3 `optional` field loses its `proto3_optional` flag: its synthetic oneof
 *   (`_limit`) would then show as a real oneof.
 * This repairs both in the descriptors only; the messages the handlers encode are unchanged.
 */
import type { PackageDefinition } from '@grpc/proto-loader';
import descriptor from 'protobufjs/ext/descriptor/index.js';

const { FileDescriptorProto } = descriptor;

interface FieldDescriptor {
  name?: string;
  label?: number;
  type?: number;
  typeName?: string;
  oneofIndex?: number;
  proto3Optional?: boolean;
}

interface MessageDescriptor {
  name?: string;
  field?: FieldDescriptor[];
  nestedType?: MessageDescriptor[];
  oneofDecl?: Array<{ name?: string }>;
  options?: { mapEntry?: boolean };
}

const TYPE_MESSAGE = 11;
const LABEL_REPEATED = 3;

/** protoc's entry name: the field name in CamelCase, then `Entry` (`resource_labels` → `ResourceLabelsEntry`). */
function mapEntryName(field: string): string {
  return `${field.replace(/(?:^|_)([a-z0-9])/g, (_match, letter: string) => letter.toUpperCase())}Entry`;
}

function repairMessage(message: MessageDescriptor): void {
  const nested = message.nestedType ?? [];
  for (const field of message.field ?? []) {
    if (field.type === TYPE_MESSAGE && field.label === LABEL_REPEATED && field.name) {
      const entry = nested.find((type) => type.options?.mapEntry && type.name === field.typeName);
      if (entry) {
        entry.name = mapEntryName(field.name);
        field.typeName = entry.name;
      }
    }
    // protobufjs names an `optional` field's synthetic oneof `_<field>` and gives it that field alone.
    const oneof = field.oneofIndex === undefined ? undefined : message.oneofDecl?.[field.oneofIndex];
    if (
      oneof?.name === `_${field.name}` &&
      (message.field ?? []).filter((other) => other.oneofIndex === field.oneofIndex).length === 1
    ) {
      field.proto3Optional = true;
    }
  }
  for (const type of nested) repairMessage(type);
}

function repairFile(bytes: Buffer): Buffer {
  const file = FileDescriptorProto.decode(bytes) as unknown as { messageType?: MessageDescriptor[] };
  for (const message of file.messageType ?? []) repairMessage(message);
  return Buffer.from(FileDescriptorProto.encode(file).finish());
}

/** The package definition with its file descriptors repaired, for the ReflectionService. */
export function reflectionDefinition(definition: PackageDefinition): PackageDefinition {
  const repaired = new Map<Buffer, Buffer>();
  const repair = (bytes: Buffer) => {
    let fixed = repaired.get(bytes);
    if (!fixed) {
      fixed = repairFile(bytes);
      repaired.set(bytes, fixed);
    }
    return fixed;
  };
  return Object.fromEntries(
    Object.entries(definition).map(([name, type]) => [
      name,
      'fileDescriptorProtos' in type && Array.isArray(type.fileDescriptorProtos)
        ? { ...type, fileDescriptorProtos: type.fileDescriptorProtos.map(repair) }
        : type,
    ]),
  ) as PackageDefinition;
}
