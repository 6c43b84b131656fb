#!/usr/bin/env python3
"""Regenerates the environment-variable table of docs/cli.md from the flags in src/cli.rs (run from
the repository root; tests/integration/cli_env.rs fails when the table misses one)."""
import re
s=open('src/cli.rs').read()
structs={}
for m in re.finditer(r'pub struct (\w+) \{(.*?)\n\}', s, re.S):
    name, body = m.group(1), m.group(2)
    fields=[]; doc=[]; cur=None
    for line in body.split('\n'):
        t=line.strip()
        if t.startswith('///'):
            doc.append(t[3:].strip())
        elif t.startswith('#[arg('):
            env=re.search(r'env = "(\w+)"', t)
            cur={'env': env.group(1) if env else None, 'doc': ' '.join(doc)}
        elif t.startswith('#[command(flatten)]'):
            cur={'flatten': True}
        elif t.startswith('pub ') and ':' in t:
            if cur is not None:
                cur['field']=t[4:].split(':')[0]; fields.append(cur)
            cur=None; doc=[]
    structs[name]=fields
# Every subcommand in the order `enum Command` lists them.
commands=re.search(r'pub enum Command \{(.*?)\n\}', s, re.S).group(1)
order=[('(every command)','Cli')]+[(v.lower(), a) for v, a in re.findall(r'^\s+(\w+)\((\w+Args)\),', commands, re.M)]
rows=[]
def first(doc):
    return re.split(r'(?<=[a-z)`])\. ', doc)[0].rstrip('.').replace('|', '\\|')
for cmd, st in order:
    for f in structs[st]:
        if f.get('flatten'):
            sub={'engine':'EngineArgs','s3':'S3Args'}[f['field']]
            for g in structs[sub]:
                if g.get('env'): rows.append((cmd,'--'+g['field'].replace('_','-'),g['env'],first(g['doc'])))
        elif f.get('env'):
            rows.append((cmd,'--'+f['field'].replace('_','-'),f['env'],first(f['doc'])))
table=''.join("| `%s` | `%s` | `%s` | %s |\n" % r for r in rows)
doc=open('docs/cli.md').read()
head=doc[:doc.index('| command | flag | variable | meaning |')]
open('docs/cli.md','w').write(head+'| command | flag | variable | meaning |\n| --- | --- | --- | --- |\n'+table)
