import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadTokenizer } from '../../lib/model/tokenizer';

const fixture = path.join(__dirname, '..', 'fixtures', 'models', 'llama');
const golden = JSON.parse(fs.readFileSync(path.join(fixture, 'golden.json'), 'utf8'));

describe('tokenizer', () => {
  test('ids match the Rust tokenizers library (golden)', () => {
    const tok = loadTokenizer(fixture);
    for (const { text, ids } of golden.tokenization) {
      expect(tok.encode(text)).toEqual(ids);
      expect(tok.decode(ids)).toBe(text);
    }
    expect(tok.vocabSize).toBe(300);
  });

  test('chat template renders like transformers', () => {
    const tok = loadTokenizer(fixture);
    expect(tok.applyChatTemplate(golden.chat.messages, { addGenerationPrompt: true })).toBe(golden.chat.text);
  });

  test('missing and corrupt tokenizer files are clear errors', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-tok-'));
    expect(() => loadTokenizer(dir)).toThrow(/tokenizer.json: missing; a model folder needs tokenizer.json/);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"model": ');
    expect(() => loadTokenizer(dir)).toThrow(/tokenizer.json is not valid JSON/);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), fs.readFileSync(path.join(fixture, 'tokenizer.json')));
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), '{"chat_template": "{% for m in messages %}"}');
    expect(() => loadTokenizer(dir)).toThrow(/chat_template does not parse/);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
