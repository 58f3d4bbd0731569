// A protoc plugin (run by `buf generate`, see buf.gen.yaml): one error class per value of the contract's
// enum ErrorReason, subclassing the class of the status code its `status_code` option names, so the
// client's reason classes come from the contract and never drift from it.
//
// For a value ERROR_REASON_MODEL_NOT_FOUND with status_code NOT_FOUND it writes
// `export class ModelNotFound extends NotFound { static override readonly reason = "MODEL_NOT_FOUND"; }`
// with the value's comment, and REASON_CLASSES maps every wire reason to its class. A reason named like its
// code's class (INTERNAL with code INTERNAL) is that class.

import { getOption, type DescEnumValue, type DescExtension, type DescFile } from "@bufbuild/protobuf";
import { createEcmaScriptPlugin, runNodeJs, type Schema } from "@bufbuild/protoplugin";

const ENUM = "modelplane.v1.ErrorReason";
const PREFIX = "ERROR_REASON_";
const OPTION = "status_code";
// Where the generated file (src/gen/modelplane/v1/) finds ModelplaneError and the per-code classes.
const CLASSES_MODULE = "../../../error-classes.js";

/** "MODEL_NOT_FOUND" -> "ModelNotFound". */
function pascal(name: string): string {
  return name
    .toLowerCase()
    .split("_")
    .map((word) => word.charAt(0).toUpperCase() + word.slice(1))
    .join("");
}

interface Reason {
  value: DescEnumValue;
  wire: string;
  className: string;
  codeClass: string;
  codeName: string;
}

function reasons(file: DescFile): Reason[] | undefined {
  const reasonEnum = file.enums.find((e) => e.typeName === ENUM);
  if (reasonEnum === undefined) {
    return undefined;
  }
  const option = file.extensions.find((e: DescExtension) => e.name === OPTION);
  if (option === undefined || option.fieldKind !== "enum") {
    throw new Error(`${file.name}: ${ENUM} needs the enum option ${OPTION}`);
  }
  const codeNames = new Map(option.enum.values.map((v) => [v.number, v.name]));
  return reasonEnum.values
    .filter((value) => value.number !== 0)
    .map((value) => {
      if (!value.name.startsWith(PREFIX)) {
        throw new Error(`${value.name}: every ErrorReason value starts with ${PREFIX}`);
      }
      const codeName = codeNames.get(getOption(value, option) as number);
      if (codeName === undefined || codeName === "OK") {
        throw new Error(`${value.name}: its ${OPTION} option must name an error code`);
      }
      const wire = value.name.slice(PREFIX.length);
      return { value, wire, className: pascal(wire), codeClass: pascal(codeName), codeName };
    });
}

function generateTs(schema: Schema): void {
  for (const file of schema.files) {
    const found = reasons(file);
    if (found === undefined) {
      continue;
    }
    const f = schema.generateFile(`${file.name.replace(/\.proto$/, "")}_errors.ts`);
    f.preamble(file);
    const codeClasses = [...new Set(found.map((r) => r.codeClass))].sort();
    f.print(`import {`);
    for (const name of [...codeClasses, "type ErrorClass"]) {
      f.print(`  ${name},`);
    }
    f.print(`} from "${CLASSES_MODULE}";`);
    f.print();
    f.print(`/** A reason a modelplane server sends in ErrorInfo (domain "modelplane"). */`);
    f.print(`export type Reason =`);
    found.forEach((r, index) => f.print(`  | "${r.wire}"${index === found.length - 1 ? ";" : ""}`));
    for (const r of found) {
      if (r.className === r.codeClass) {
        continue;
      }
      f.print();
      f.print(f.jsDoc(r.value));
      f.print(`export class ${r.className} extends ${r.codeClass} {`);
      f.print(`  static override readonly reason: string = "${r.wire}";`);
      f.print(`}`);
    }
    f.print();
    f.print(`/** The class of each reason, by the reason as it travels (ErrorInfo.reason). */`);
    f.print(`export const REASON_CLASSES: ReadonlyMap<string, ErrorClass> = new Map<string, ErrorClass>([`);
    for (const r of found) {
      f.print(`  ["${r.wire}", ${r.className === r.codeClass ? r.codeClass : r.className}],`);
    }
    f.print(`]);`);
  }
}

runNodeJs(createEcmaScriptPlugin({ name: "protoc-gen-modelplane-errors", version: "v1", generateTs }));
